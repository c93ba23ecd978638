using ILGPU;
using ILGPU.Runtime;
using IlgpuLlama.Device;
using IlgpuLlama.Kernels;
using IlgpuLlama.Kernels.Reference;

namespace IlgpuLlama.Cli.Bench;

/// <summary>Outcome of validating one case against <see cref="KernelReference"/>.</summary>
/// <param name="Passed">every compared value is within tolerance</param>
/// <param name="Method">what was compared, e.g. "256 of 128256 rows (sampled)" or "all 4096 values"</param>
/// <param name="Tolerance">the named tolerance used</param>
/// <param name="MaxErrorFraction">largest |error| / tolerance seen (0 for exact comparisons that matched; null when not finite: a NaN output or no comparison)</param>
/// <param name="Report">the comparison report (first mismatches when it failed)</param>
public sealed record Validation(bool Passed, string Method, string Tolerance, double? MaxErrorFraction, string Report)
{
    /// <summary>A validation from several comparisons: passes when all pass.</summary>
    public static Validation From(string method, Tolerance tolerance, params Comparison[] comparisons)
    {
        bool passed = comparisons.All(c => c.Passed);
        double worst = comparisons.Max(c => c.MaxErrorFraction);
        string report = string.Join("; ", comparisons.Select(c => c.Report));
        return new Validation(passed, method, tolerance.ToString(), double.IsFinite(worst) ? worst : null, report);
    }

    /// <summary>A failed validation with a message (e.g. the launch was rejected).</summary>
    public static Validation Failed(string method, string message) => new(false, method, "-", null, message);
}

/// <summary>A named tolerance |actual - expected| &lt;= Abs + Rel * |expected|.</summary>
public sealed record Tolerance(string Name, double Abs, double Rel)
{
    /// <summary>fp32 accumulation of 16-bit weights times fp32 activations against a float64 reference.</summary>
    public static Tolerance Matmul { get; } = new("matmul", 1e-4, 1e-4);

    /// <summary>fp32 softmax and accumulation over the fp16 KV cache.</summary>
    public static Tolerance Attention { get; } = new("attention", 1e-5, 1e-4);

    /// <summary>Element-wise fp32 math (RMSNorm, SwiGLU, RoPE).</summary>
    public static Tolerance Elementwise { get; } = new("elementwise", 1e-6, 1e-5);

    /// <summary>Values rounded to fp16 (KV cache): one rounding step of difference.</summary>
    public static Tolerance Fp16 { get; } = new("fp16", 1e-4, 1e-3);

    /// <summary>Softmax normaliser (sum of up to 128K exponentials in fp32).</summary>
    public static Tolerance Normaliser { get; } = new("normaliser", 1e-6, 1e-4);

    /// <summary>Bit-exact (gathers, selections).</summary>
    public static Tolerance Exact { get; } = new("exact", 0, 0);

    /// <inheritdoc/>
    public override string ToString() => $"{Name} (abs {Abs:G2} + rel {Rel:G2})";
}

/// <summary>One kernel at one shape: what it moves and computes, and how to set it up.</summary>
/// <param name="Kernel">kernel name as in the catalog (matvec_fp16, attention, ...)</param>
/// <param name="Family">kernel family (file)</param>
/// <param name="Shape">shape text, e.g. "2048x2048 q/o proj"</param>
/// <param name="Batch">batch (decode vectors or rows)</param>
/// <param name="Bytes">global memory bytes one launch must move (from the kernel file's BytesMoved)</param>
/// <param name="Flops">floating-point operations of one launch (0 when none)</param>
/// <param name="Prepare">allocates and fills the buffers on a device</param>
public sealed record BenchCase(string Kernel, string Family, string Shape, int Batch, long Bytes, long Flops, Func<BenchContext, PreparedCase> Prepare);

/// <summary>A case with its device buffers allocated and filled.</summary>
public sealed class PreparedCase(int copies, Func<Validation> validate, Action<int> launch, string? note = null)
{
    /// <summary>Copies of the streamed inputs that launches rotate through.</summary>
    public int Copies { get; } = copies;

    /// <summary>Runs the kernel once on copy 0 and compares with the CPU reference.</summary>
    public Func<Validation> Validate { get; } = validate;

    /// <summary>Enqueues one launch reading copy <c>i % Copies</c>.</summary>
    public Action<int> Launch { get; } = launch;

    /// <summary>Extra information for the output (e.g. a clamped parameter).</summary>
    public string? Note { get; } = note;
}

/// <summary>Device, kernels, allocator and policies shared by every case of one run.</summary>
public sealed class BenchContext
{
    readonly List<IDisposable> owned = [];

    /// <summary>Creates the context.</summary>
    public BenchContext(ComputeDevice device, LlamaKernels kernels, DeviceAllocator allocator, int seed)
    {
        Device = device;
        Kernels = kernels;
        Allocator = allocator;
        Seed = seed;
    }

    /// <summary>The device.</summary>
    public ComputeDevice Device { get; }

    /// <summary>Kernels loaded for the device and weight storage.</summary>
    public LlamaKernels Kernels { get; }

    /// <summary>Every buffer is allocated through this (category Other, names bench.*).</summary>
    public DeviceAllocator Allocator { get; }

    /// <summary>Base seed of the random data.</summary>
    public int Seed { get; }

    /// <summary>Weight storage type.</summary>
    public WeightStorage Storage => Kernels.Storage;

    /// <summary>Kernel name suffix of the storage type.</summary>
    public string StorageName => Storage == WeightStorage.Fp16 ? "fp16" : "bf16";

    /// <summary>
    /// The rotation target: inputs smaller than this are replicated so that consecutive launches
    /// read different copies and together stream this many bytes (4 x a 50 MB L2).
    /// </summary>
    public const long RotationBytes = 4L * 50 * 1000 * 1000;

    /// <summary>Upper bound on the number of copies.</summary>
    public const int MaxCopies = 512;

    /// <summary>
    /// Copies of inputs of <paramref name="streamedBytes"/> per launch so that the copies together
    /// are at least <see cref="RotationBytes"/>; 1 on the CPU accelerator (its timings are a functional check).
    /// </summary>
    public int CopiesFor(long streamedBytes) =>
        !Device.IsCuda || streamedBytes <= 0 || streamedBytes >= RotationBytes
            ? 1
            : (int)Math.Min(MaxCopies, (RotationBytes + streamedBytes - 1) / streamedBytes);

    /// <summary>Allocates a bench buffer that lives until the current case is finished.</summary>
    public DeviceBuffer<T> Alloc<T>(string name, params long[] shape)
        where T : unmanaged
    {
        var b = Allocator.Allocate<T>(name, MemoryCategory.Other, shape);
        owned.Add(b);
        return b;
    }

    /// <summary>Allocates <paramref name="copies"/> back-to-back copies of <paramref name="data"/> (uploaded once, replicated on the device).</summary>
    public RotatedBuffer<T> Rotated<T>(string name, T[] data, int copies)
        where T : unmanaged
    {
        var b = Alloc<T>(name, copies, data.LongLength);
        var first = b.View.SubView(0, data.LongLength);
        first.CopyFromCPU(data);
        for (int c = 1; c < copies; c++)
            b.View.SubView(c * data.LongLength, data.LongLength).CopyFrom(first);
        return new RotatedBuffer<T>(b, data.LongLength, copies);
    }

    /// <summary>Allocates and uploads one buffer.</summary>
    public DeviceBuffer<T> Upload<T>(string name, T[] data)
        where T : unmanaged
    {
        var b = Alloc<T>(name, data.LongLength);
        b.View.CopyFromCPU(data);
        return b;
    }

    /// <summary>Frees every buffer of the current case.</summary>
    public void ReleaseCase()
    {
        foreach (var d in owned)
            d.Dispose();
        owned.Clear();
    }
}

/// <summary>A buffer holding several copies of the same input; <see cref="Copy"/> picks one.</summary>
public sealed class RotatedBuffer<T>(DeviceBuffer<T> buffer, long length, int copies)
    where T : unmanaged
{
    /// <summary>Number of copies.</summary>
    public int Copies { get; } = copies;

    /// <summary>Elements per copy.</summary>
    public long Length { get; } = length;

    /// <summary>Copy <c>i % Copies</c>.</summary>
    public ArrayView<T> Copy(int i) => buffer.View.SubView(i % Copies * Length, Length);
}
