using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Runtime.ExceptionServices;
using ILGPU.Backends;

namespace IlgpuLlama.Kernels;

/// <summary>
/// The kernels of the model on one accelerator: compiles each declared specialisation on first
/// use (<see cref="KernelDefinition{TArgs}"/>), or all of a pass's at once, concurrently
/// (<see cref="Precompile"/>), enqueues launches on <see cref="Stream"/> or
/// records them, and carries the launch shapes (<see cref="Tuning"/>). The launchers themselves,
/// with their shape checks, live beside each kernel as extension methods (MatVecKernels.MatVec,
/// AttentionKernels.Attention, ...). Nothing here allocates device memory: workspaces are passed in,
/// so the engine's tracking allocator sees every byte.
/// </summary>
public sealed class LlamaKernels
{
    /// <summary>
    /// Loaded specialisations per accelerator, shared by every <see cref="LlamaKernels"/> on it (several
    /// models, the tests' many instances): what ILGPU's kernel cache did when kernels were loaded by
    /// method, kept here because <see cref="KernelDefinition{TArgs}.Compile"/> bypasses that cache.
    /// </summary>
    static readonly ConditionalWeakTable<Accelerator, ConcurrentDictionary<(IKernelDefinition Kernel, KernelVariant Variant), Delegate>> SharedLoaded = new();

    readonly ConcurrentDictionary<(IKernelDefinition Kernel, KernelVariant Variant), Lazy<Delegate>> loaded = new();
    readonly ConcurrentDictionary<(IKernelDefinition Kernel, KernelVariant Variant), CompiledKernel> precompiled = new();
    readonly ConcurrentDictionary<(IKernelDefinition Kernel, KernelVariant Variant), ExceptionDispatchInfo> failedToCompile = new();
    readonly ConcurrentDictionary<(IKernelDefinition Kernel, KernelVariant Variant), Delegate> shared;

    /// <summary>Kernel specialisations this instance has launched or precompiled (loaded) so far.</summary>
    public int LoadedCount => loaded.Count;
    List<Action>? recording;
    List<((IKernelDefinition Kernel, KernelVariant Variant) Key, Func<CompiledKernel> Compile, Action Load)>? discovering;
    long directLaunches;

    /// <summary>Prepares kernels for <paramref name="accelerator"/> (each is compiled on first launch).</summary>
    public LlamaKernels(Accelerator accelerator, KernelTuning? tuning = null)
    {
        Accelerator = accelerator;
        Tuning = (tuning ?? KernelTuning.For(accelerator)).ClampTo(accelerator);
        Stream = accelerator.DefaultStream;
        shared = SharedLoaded.GetValue(accelerator, _ => new());
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

    /// <summary>
    /// Compiles every specialisation <paramref name="enqueue"/> launches, then loads them, so no
    /// compilation happens when the launches run (or are recorded) later; nothing is enqueued. The
    /// distinct specialisations not loaded yet are compiled concurrently, one per core, with ILGPU's
    /// back end (<see cref="KernelDefinition{TArgs}.Compile"/>, safe on several threads), and loaded
    /// on the calling thread in launch order (loading is not thread-safe). A compile error is kept and
    /// thrown from here when its specialisation's turn to load comes, as a serial first launch throws
    /// it: the first failure in launch order, with its own stack trace.
    /// </summary>
    /// <returns>how many specialisations were compiled (those another instance on the accelerator loaded are reused)</returns>
    public int Precompile(Action enqueue)
    {
        var wanted = new List<((IKernelDefinition Kernel, KernelVariant Variant) Key, Func<CompiledKernel> Compile, Action Load)>();
        discovering = wanted;
        try
        {
            enqueue();
        }
        finally
        {
            discovering = null;
        }
        var toCompile = wanted.Where(w => !shared.ContainsKey(w.Key)).ToList();
        Parallel.ForEach(toCompile, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount }, w =>
        {
            try
            {
                precompiled[w.Key] = w.Compile();
            }
            catch (Exception e)
            {
                // Thrown below, by the load, in launch order: not compiled again, since a failed
                // compile can leave ILGPU's shared IR context broken and a retry fails otherwise.
                failedToCompile[w.Key] = ExceptionDispatchInfo.Capture(e);
            }
        });
        try
        {
            foreach (var w in wanted)
                w.Load();
        }
        finally
        {
            precompiled.Clear();
            failedToCompile.Clear();
        }
        return toCompile.Count;
    }

    /// <summary>The launcher of a specialisation, compiled and loaded on first use; null while <see cref="Precompile"/> discovers.</summary>
    Delegate? Loaded<TArgs>(KernelDefinition<TArgs> kernel, KernelVariant variant)
        where TArgs : struct
    {
        var key = ((IKernelDefinition)kernel, variant);
        if (discovering is { } d)
        {
            if (!loaded.ContainsKey(key) && !d.Exists(w => w.Key == key))
                d.Add((key, () => kernel.Compile(Accelerator, variant), () => Loaded(kernel, variant)));
            return null;
        }
        return loaded.GetOrAdd(key, _ => new Lazy<Delegate>(() =>
        {
            if (shared.TryGetValue(key, out var launcher))
                return launcher;
            if (failedToCompile.TryRemove(key, out var failure))
                failure.Throw();
            var compiled = precompiled.TryRemove(key, out var c) ? c : kernel.Compile(Accelerator, variant);
            return shared.GetOrAdd(key, kernel.Load(Accelerator, compiled));
        }, LazyThreadSafetyMode.ExecutionAndPublication)).Value;
    }

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
        if (Loaded(kernel, variant) is not { } launcher)
            return; // Precompile is only discovering
        var run = (Action<AcceleratorStream, KernelConfig, TArgs>)launcher;
        var stream = Stream;
        Enqueue(() => run(stream, config, args));
    }

    /// <summary>Enqueues (or records) an implicitly grouped kernel over <paramref name="extent"/> threads.</summary>
    public void Launch<TArgs>(KernelDefinition<TArgs> kernel, KernelVariant variant, Index1D extent, TArgs args)
        where TArgs : struct
    {
        if (Loaded(kernel, variant) is not { } launcher)
            return; // Precompile is only discovering
        var run = (Action<AcceleratorStream, Index1D, TArgs>)launcher;
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
