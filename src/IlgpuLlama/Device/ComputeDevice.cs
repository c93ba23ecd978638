using System.Reflection;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using ILGPU.Runtime;
using ILGPU;

namespace IlgpuLlama.Device;

/// <summary>Which accelerator to run on.</summary>
public enum DeviceKind
{
    /// <summary>CUDA if a GPU is present, else the CPU accelerator.</summary>
    Auto,

    /// <summary>The first CUDA GPU (an error if there is none).</summary>
    Cuda,

    /// <summary>ILGPU's CPU accelerator.</summary>
    Cpu,
}

/// <summary>An ILGPU context and one accelerator, created together and disposed together.</summary>
public sealed class ComputeDevice : IDisposable
{
    ComputeDevice(Context context, Accelerator accelerator)
    {
        Context = context;
        Accelerator = accelerator;
    }

    /// <summary>The ILGPU context.</summary>
    public Context Context { get; }

    /// <summary>The accelerator.</summary>
    public Accelerator Accelerator { get; }

    /// <summary>True on a CUDA GPU.</summary>
    public bool IsCuda => Accelerator is CudaAccelerator;

    /// <summary>One line: name, memory, warp, compute capability.</summary>
    public string Description => Describe(Accelerator);

    /// <summary>
    /// The CPU device the engine uses: warps of one lane, one warp per group, one emulated
    /// multiprocessor per core. ILGPU's CPU accelerator runs one OS thread per emulated thread and
    /// synchronises them with .NET barriers for every shuffle (four per shuffle) and group barrier, and
    /// allocates host memory for every group's shared memory, so its cost grows with threads and
    /// groups, not with the work; under load every barrier also waits for the scheduler. A group of one
    /// lane needs no shuffle (every kernel reduces over <c>Warp.WarpSize</c> lanes, so a one-lane warp
    /// reduces nothing) and its barriers never wait: the demo's decode step went from 51 to 9-13 ms on
    /// a quiet 2-core machine and from 381 to 34-45 ms beside two busy loops (warps of 2 before; same
    /// kernels, the kernel tests cover warps of 1, 2, 4 and 32 and multi-warp groups).
    /// </summary>
    /// <remarks>
    /// ILGPU's public constructor refuses warps below 2 (its check, not a runtime limit: the runtime
    /// sizes every barrier and warp context from the warp size); its private one with <c>skipChecks</c>
    /// accepts one. Should that constructor ever be missing, the engine falls back to warps of 2.
    /// </remarks>
    public static CPUDevice EngineCpuDevice => SingleLaneDevice(Math.Max(1, Environment.ProcessorCount)) ?? new CPUDevice(2, 1, Math.Max(1, Environment.ProcessorCount));

    /// <summary>A CPU device with one-lane warps and one warp per group on <paramref name="multiprocessors"/> threads, or null if ILGPU offers no way to make one.</summary>
    public static CPUDevice? SingleLaneDevice(int multiprocessors)
    {
        var ctor = typeof(CPUDevice).GetConstructor(BindingFlags.NonPublic | BindingFlags.Instance, [typeof(int), typeof(int), typeof(int), typeof(bool)]);
        try
        {
            return ctor?.Invoke([1, 1, multiprocessors, true]) as CPUDevice;
        }
        catch (TargetInvocationException)
        {
            return null;
        }
    }

    /// <summary>Creates a CPU-accelerator device with a specific emulated shape (tests).</summary>
    public static ComputeDevice CreateCpu(CPUDevice cpu)
    {
        var context = Context.Create(b => b.CPU(cpu).EnableAlgorithms().Optimize(OptimizationLevel.O2));
        return new ComputeDevice(context, context.GetCPUDevice(0).CreateCPUAccelerator(context));
    }

    /// <summary>Creates the device; <see cref="DeviceKind.Cuda"/> without a GPU is a clear error.</summary>
    public static ComputeDevice Create(DeviceKind kind)
    {
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        var device = CreateUntimed(kind);
        device.CreationTime = System.Diagnostics.Stopwatch.GetElapsedTime(start);
        return device;
    }

    /// <summary>How long <see cref="Create"/> took: the ILGPU context and the accelerator (zero for a device made otherwise).</summary>
    public TimeSpan CreationTime { get; private set; }

    static ComputeDevice CreateUntimed(DeviceKind kind)
    {
        if (kind != DeviceKind.Cpu)
        {
            Context? context = null;
            try
            {
                context = Context.Create(b => b.Cuda().EnableAlgorithms().Profiling().Optimize(OptimizationLevel.O2));
                var gpus = context.GetCudaDevices();
                if (gpus.Count > 0)
                    return new ComputeDevice(context, gpus[0].CreateCudaAccelerator(context));
            }
            catch (Exception e) when (kind == DeviceKind.Auto && e is not OutOfMemoryException)
            {
                // no usable CUDA driver: fall back to the CPU below
            }
            context?.Dispose();
            if (kind == DeviceKind.Cuda)
                throw new EngineStateException(
                    $"{EngineParameters.Device} cuda: no CUDA GPU was found (is the NVIDIA driver installed?); use {EngineParameters.Device} cpu or {EngineParameters.Device} auto",
                    EngineParameter.Device);
        }
        return CreateCpu(EngineCpuDevice);
    }

    /// <summary>Describes an accelerator in one line.</summary>
    public static string Describe(Accelerator a)
    {
        if (a is CudaAccelerator c)
            return $"{a.Name} (CUDA, {a.MemorySize / 1e9:F1} GB, compute capability {c.Architecture.ToString().Replace("SM_", "sm_")}, {a.NumMultiprocessors} SMs)";
        return $"ILGPU CPU accelerator (warp {a.WarpSize}, max group {a.MaxNumThreadsPerGroup}, {a.NumMultiprocessors} emulated multiprocessors)";
    }

    /// <summary>Every accelerator ILGPU can see (CUDA GPUs and the CPU accelerator); the CPU has no compute capability (null).</summary>
    public static IReadOnlyList<(string Kind, string Name, long MemoryBytes, int WarpSize, string? ComputeCapability, int MultiprocessorCount)> ListAll()
    {
        var list = new List<(string, string, long, int, string?, int)>();
        try
        {
            using var context = Context.Create(b => b.Cuda());
            foreach (var d in context.GetCudaDevices())
                list.Add(("cuda", d.Name, d.MemorySize, d.WarpSize, d.Architecture?.ToString().Replace("SM_", "sm_") ?? "unknown", d.NumMultiprocessors));
        }
        catch (Exception)
        {
            // no CUDA driver
        }
        var cpu = EngineCpuDevice;
        list.Add(("cpu", "ILGPU CPU accelerator", cpu.MemorySize, cpu.WarpSize, null, cpu.NumMultiprocessors));
        return list;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        Accelerator.Dispose();
        Context.Dispose();
    }
}
