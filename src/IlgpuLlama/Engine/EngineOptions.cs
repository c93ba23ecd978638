using IlgpuLlama.Kernels;

namespace IlgpuLlama.Engine;

/// <summary>How decode steps are launched.</summary>
public enum DecodeLaunch
{
    /// <summary>CUDA graphs on a GPU, kernel by kernel elsewhere.</summary>
    Auto,

    /// <summary>Every kernel launched from the host every step.</summary>
    Direct,

    /// <summary>
    /// Each step recorded once per batch size and replayed: a CUDA graph on a GPU; on the CPU
    /// accelerator a recorded list of launches with frozen arguments (same semantics, for tests).
    /// </summary>
    Graph,
}

/// <summary>Engine limits and choices, fixed when a model is loaded.</summary>
public sealed record EngineOptions
{
    /// <summary>Sequences decoded together (KV-cache slots), 1..<see cref="Model.WorkspaceShape.MaxSequences"/>.</summary>
    public int MaxBatchSize { get; init; } = 4;

    /// <summary>
    /// Positions per sequence in the KV cache (prompt + generated tokens); null: the longest context
    /// that fits the device beside the weights and workspace at <see cref="MaxBatchSize"/>, at most the
    /// model's max_position_embeddings and <see cref="Model.WorkspaceShape.DefaultContextCap"/>
    /// (<see cref="Model.WorkspaceShape.DefaultCpuContextCap"/> on the CPU accelerator)
    /// (<see cref="LlamaModel.MaxSeq"/> tells what was chosen).
    /// </summary>
    public int? MaxSeqLen { get; init; }

    /// <summary>
    /// Format of the weights on the device; null: the format a quantised checkpoint is stored in, else
    /// fp16 (the P100 has no bf16 arithmetic). A quantised checkpoint loads only in its own format.
    /// </summary>
    public WeightFormat? WeightFormat { get; init; }

    /// <summary>
    /// A K-quant mix to store the matrices in (llama.cpp's q4_k_m, q5_k_m: a format per matrix), instead
    /// of one <see cref="WeightFormat"/>; null: none.
    /// </summary>
    public Model.WeightMix? WeightMix { get; init; }

    /// <summary>The main format a model of <paramref name="config"/> loads in with these options (see <see cref="ResolveLayout"/>).</summary>
    public WeightFormat ResolveFormat(Model.LlamaConfig config) => ResolveLayout(config).Main;

    /// <summary>
    /// The format of each matrix a model of <paramref name="config"/> loads in with these options: a
    /// quantised checkpoint's own (it loads only in it), else the mix or format asked for, else fp16.
    /// </summary>
    public Model.WeightLayout ResolveLayout(Model.LlamaConfig config)
    {
        if (WeightMix is not null && WeightFormat is not null)
            throw new EngineArgumentException($"both a weight format ({WeightFormat.Name}) and a mix ({WeightMix.Name}) were asked for; give one {EngineParameters.WeightFormat}", EngineParameter.WeightFormat);
        string? asked = WeightMix?.Name ?? WeightFormat?.Name;
        if (config.StoredLayout is { } stored)
        {
            string own = config.QuantizationMix?.Name ?? config.Quantization!.Name;
            if (asked is not null && asked != own)
                throw new EngineArgumentException(
                    $"the model is stored as {own} and loads only as {own}, not {asked}; use {EngineParameters.WeightFormat} {own}, " +
                    $"or quantize the original checkpoint to {asked}", EngineParameter.WeightFormat);
            return stored;
        }
        return WeightMix is { } mix ? mix.Layout(config) : WeightFormat ?? Kernels.WeightFormat.Fp16;
    }

    /// <summary>
    /// What the KV cache stores: fp16 (the default: half the memory and attention traffic) or fp32
    /// (keys and values unrounded: with a bf16 or fp16 model in its own 16-bit format, log-probabilities
    /// within about 2e-4 of a float64 forward pass on the golden model, as close as fp32 sums get there,
    /// and within 1e-4 with <see cref="Accumulation"/> fp64, against 0.18 with fp16; for evaluation runs).
    /// The persistent decode variant takes fp16 only.
    /// </summary>
    public KvCacheType KvCacheType { get; init; } = KvCacheType.Fp16;

    /// <summary>
    /// How the matmuls (prefill, decode, LM head) and RMSNorm sum: fp32 (the default, the kernels'
    /// design) or float64 with one rounding to the fp32 activation each stores (for evaluation: with a
    /// model in its own 16-bit format and an fp32 KV cache, log-probabilities within 1e-4 of a float64
    /// forward pass on the golden model, where fp32 sums leave 1e-4 to 2e-4). Float64 runs the
    /// baseline decode variant's layer as the prefill does, one matmul per projection.
    /// </summary>
    public Accumulation Accumulation { get; init; } = Accumulation.Fp32;

    /// <summary>Prompt tokens per prefill pass (null: every sequence's full context, at most <see cref="Model.WorkspaceShape.MaxDefaultPrefillTokens"/>).</summary>
    public int? PrefillChunk { get; init; }

    /// <summary>How decode steps are launched.</summary>
    public DecodeLaunch DecodeLaunch { get; init; } = DecodeLaunch.Auto;

    /// <summary>Receives one line per device allocation and free.</summary>
    public Action<string>? AllocationLog { get; init; }

    /// <summary>Kernel launch shapes (null: defaults for the device).</summary>
    public KernelTuning? Tuning { get; init; }

    /// <summary>How the decode step runs (see <see cref="Engine.DecodeVariant"/>).</summary>
    public DecodeVariant DecodeVariant { get; init; } = DecodeVariant.Baseline;
}

/// <summary>How the matmuls and RMSNorm accumulate (<see cref="EngineOptions.Accumulation"/>).</summary>
public enum Accumulation
{
    /// <summary>fp32 sums (the default).</summary>
    Fp32,

    /// <summary>float64 products and sums, rounded once to fp32 (<see cref="Kernels.PreciseKernels"/>): for evaluation runs.</summary>
    Fp64,
}

/// <summary>Names of <see cref="Accumulation"/>.</summary>
public static class Accumulations
{
    /// <summary>The name on the command line and in reports: fp32, fp64.</summary>
    public static string Name(this Accumulation a) => a switch
    {
        Accumulation.Fp32 => "fp32",
        Accumulation.Fp64 => "fp64",
        _ => throw new ArgumentOutOfRangeException(nameof(a), a, "unknown accumulation"),
    };

    /// <summary>Every accumulation, in order.</summary>
    public static IReadOnlyList<Accumulation> All { get; } = [Accumulation.Fp32, Accumulation.Fp64];

    /// <summary>The accumulation named <paramref name="name"/> (case-insensitive), or null.</summary>
    public static Accumulation? Parse(string name) => All.Cast<Accumulation?>().FirstOrDefault(a => string.Equals(a!.Value.Name(), name, StringComparison.OrdinalIgnoreCase));
}

/// <summary>
/// A warning from the engine (unused tensors, lossy conversion, a fallback taken), whose text
/// names parameters through <see cref="EngineParameters"/> placeholders so a front end can show
/// its own option names; <see cref="ToString"/> renders them as a library user sets them.
/// </summary>
/// <param name="Template">the text with placeholders</param>
public sealed record EngineNotice(string Template)
{
    /// <summary>The text with a front end's parameter names.</summary>
    public string Render(Func<EngineParameter, string> name) => EngineParameters.Render(Template, name);

    /// <inheritdoc/>
    public override string ToString() => Render(EngineParameters.LibraryName);
}

/// <summary>
/// A way of running the decode step, kept selectable until a GPU run decides which is fastest
/// (docs/performance.md); every variant computes the same function (the golden tests run each).
/// </summary>
/// <param name="Name">the name on the command line</param>
/// <param name="Description">what differs</param>
/// <param name="FuseNorms">fold each RMSNorm into the matvec that consumes it (no RMSNorm launches in decode)</param>
/// <param name="ShortAttention">let an attention split cover at least one whole tile (a group's keys), so rows up to a tile long need no split merge</param>
/// <param name="OneLaunchPerLayer">run each layer as one persistent launch (DecodeLayerKernels) instead of five</param>
public sealed record DecodeVariant(string Name, string Description, bool FuseNorms, bool ShortAttention, bool OneLaunchPerLayer = false)
{
    /// <summary>The decode step measured on the H200 on 2026-11-27: RMSNorm launches, attention splits of at least 32 keys.</summary>
    public static DecodeVariant Baseline { get; } = new("baseline", "RMSNorm launched before its matvec; attention split into chunks of at least 32 keys", false, false);

    /// <summary>RMSNorm fused into the q/k/v, gate/up and LM-head matvecs: 2 x layers + 1 fewer launches per step.</summary>
    public static DecodeVariant FusedNorm { get; } = new("fused-norm", "RMSNorm folded into the q/k/v, gate/up and LM-head matvecs (no RMSNorm launches)", true, false);

    /// <summary>Fused norms and short-context attention without a split merge.</summary>
    public static DecodeVariant FusedNormShortAttention { get; } = new("fused-norm-short-attn",
        "fused-norm, and attention splits of at least one tile of keys, so contexts up to a tile need no merge phase", true, true);

    /// <summary>Fused norms, and each layer one persistent launch whose groups take the layer's tasks from a ticket counter.</summary>
    public static DecodeVariant Persistent { get; } = new("persistent",
        "fused-norm, and each layer one persistent launch: its groups take q/k/v, attention, o, gate/up and down tasks in order from one ticket counter (one launch per layer instead of five)", true, false, true);

    /// <summary>Every variant, the default first.</summary>
    public static IReadOnlyList<DecodeVariant> All { get; } = [Baseline, FusedNorm, FusedNormShortAttention, Persistent];

    /// <summary>The variant named <paramref name="name"/>.</summary>
    public static DecodeVariant Parse(string name) => All.FirstOrDefault(v => string.Equals(v.Name, name, StringComparison.OrdinalIgnoreCase))
        ?? throw new ArgumentException($"unknown decode variant '{name}'; known: {string.Join(", ", All.Select(v => v.Name))}", nameof(name));

    /// <summary>The kernel tuning this variant runs with.</summary>
    public KernelTuning Apply(KernelTuning tuning) => ShortAttention ? tuning with { AttentionMinChunk = Math.Max(tuning.AttentionMinChunk, tuning.AttentionGroup) } : tuning;

    /// <inheritdoc/>
    public override string ToString() => Name;
}
