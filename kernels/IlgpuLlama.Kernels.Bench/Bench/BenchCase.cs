using IlgpuLlama.Kernels.Reference;

namespace IlgpuLlama.Kernels.Bench;

/// <summary>Outcome of validating one case against its CPU reference.</summary>
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

    /// <summary>Float64 products and sums rounded once to fp32 (the precise family): one fp32 rounding of the float64 reference.</summary>
    public static Tolerance Float64Accumulated { get; } = new("float64 accumulated", 1e-12, 1.2e-7);

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

    /// <summary>Compares element by element under this tolerance.</summary>
    public Comparison Check(string what, ReadOnlySpan<float> actual, ReadOnlySpan<double> expected) => Comparison.Check(what, actual, expected, Abs, Rel);

    /// <inheritdoc/>
    public override string ToString() => $"{Name} (abs {Abs:G2} + rel {Rel:G2})";
}

/// <summary>One kernel at one shape: what it moves and computes, and how to set it up.</summary>
/// <param name="Kernel">kernel name as in the catalog, without the batch suffix (matvec_fp16, attention, ...)</param>
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
