using System.Collections.Concurrent;

namespace IlgpuLlama.Kernels;

/// <summary>
/// The kernels of the model on one accelerator: compiles each declared specialisation on first
/// use (<see cref="KernelDefinition{TArgs}"/>), enqueues launches on <see cref="Stream"/> or
/// records them, and carries the launch shapes (<see cref="Tuning"/>). The launchers themselves,
/// with their shape checks, live beside each kernel as extension methods (MatVecKernels.MatVec,
/// AttentionKernels.Attention, ...). Nothing here allocates device memory: workspaces are passed in,
/// so the engine's tracking allocator sees every byte.
/// </summary>
public sealed class LlamaKernels
{
    readonly ConcurrentDictionary<(IKernelDefinition Kernel, KernelVariant Variant), Lazy<Delegate>> loaded = new();

    /// <summary>Kernel specialisations compiled (loaded) so far.</summary>
    public int LoadedCount => loaded.Count;
    List<Action>? recording;
    long directLaunches;

    /// <summary>Prepares kernels for <paramref name="accelerator"/> (each is compiled on first launch).</summary>
    public LlamaKernels(Accelerator accelerator, KernelTuning? tuning = null)
    {
        Accelerator = accelerator;
        Tuning = (tuning ?? KernelTuning.For(accelerator)).ClampTo(accelerator);
        Stream = accelerator.DefaultStream;
    }

    /// <summary>The accelerator the kernels are compiled for.</summary>
    public Accelerator Accelerator { get; }

    /// <summary>Launch shapes in use.</summary>
    public KernelTuning Tuning { get; }

    /// <summary>Stream every launch is enqueued on (a CUDA graph captures this stream).</summary>
    public AcceleratorStream Stream { get; set; }

    /// <summary>
    /// Kernel launches enqueued on the stream so far (recorded launches, and their replays from a
    /// graph, are not counted): with graphs off, the launch index a profiler sees (ncu --launch-skip).
    /// </summary>
    public long DirectLaunches => Interlocked.Read(ref directLaunches);

    /// <summary>
    /// Runs <paramref name="enqueue"/> with launches not enqueued but appended to a list as closures
    /// with their arguments frozen, exactly what a CUDA graph capture records, and returns the list.
    /// Replaying it re-runs the same launches (the CPU stand-in for graph replay). Kernels are still
    /// compiled while recording, so recording a step once compiles everything it launches.
    /// </summary>
    public List<Action> RecordLaunches(Action enqueue)
    {
        var launches = new List<Action>();
        recording = launches;
        try
        {
            enqueue();
        }
        finally
        {
            recording = null;
        }
        return launches;
    }

    Delegate Loaded(IKernelDefinition kernel, KernelVariant variant, Func<Delegate> load) =>
        loaded.GetOrAdd((kernel, variant), _ => new Lazy<Delegate>(load, LazyThreadSafetyMode.ExecutionAndPublication)).Value;

    void Enqueue(Action launch)
    {
        if (recording is { } r)
            r.Add(launch);
        else
        {
            Interlocked.Increment(ref directLaunches);
            launch();
        }
    }

    /// <summary>Enqueues (or records) an explicitly grouped kernel.</summary>
    public void Launch<TArgs>(KernelDefinition<TArgs> kernel, KernelVariant variant, KernelConfig config, TArgs args)
        where TArgs : struct
    {
        var run = (Action<AcceleratorStream, KernelConfig, TArgs>)Loaded(kernel, variant, () => kernel.Load(Accelerator, variant));
        var stream = Stream;
        Enqueue(() => run(stream, config, args));
    }

    /// <summary>Enqueues (or records) an implicitly grouped kernel over <paramref name="extent"/> threads.</summary>
    public void Launch<TArgs>(KernelDefinition<TArgs> kernel, KernelVariant variant, Index1D extent, TArgs args)
        where TArgs : struct
    {
        var run = (Action<AcceleratorStream, Index1D, TArgs>)Loaded(kernel, variant, () => kernel.Load(Accelerator, variant));
        var stream = Stream;
        Enqueue(() => run(stream, extent, args));
    }
}

/// <summary>Host-side checks of the launchers: a clear ArgumentException instead of an out-of-bounds access on the device.</summary>
public static class Require
{
    /// <summary>Throws <see cref="ArgumentException"/> with <paramref name="message"/> unless <paramref name="condition"/>.</summary>
    public static void That(bool condition, string message)
    {
        if (!condition)
            throw new ArgumentException(message);
    }

    /// <summary>The view holds at least <paramref name="needed"/> elements.</summary>
    public static void Length<T>(ArrayView<T> view, long needed, string name)
        where T : unmanaged
    {
        if (view.Length < needed)
            throw new ArgumentException($"{name}: view has {view.Length} elements but the launch needs {needed}");
    }

    /// <summary>Input lengths read with 128-bit loads of eight 16-bit weights.</summary>
    public static void MultipleOf8(int inDim, string what) =>
        That(inDim > 0 && inDim % 8 == 0, $"{what}: input length {inDim} must be a positive multiple of 8 (weights are read 8 at a time with 128-bit loads)");

}
