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
    /// <summary>Sequences decoded together (KV-cache slots), 1..<see cref="BatchWidth.Max"/>.</summary>
    public int MaxBatchSize { get; init; } = 4;

    /// <summary>Positions per sequence in the KV cache (prompt + generated tokens).</summary>
    public int MaxSeqLen { get; init; } = 256;

    /// <summary>Format of the weights on the device (fp16 by default: the P100 has no bf16 arithmetic).</summary>
    public WeightFormat WeightFormat { get; init; } = WeightFormat.Fp16;

    /// <summary>Prompt tokens per prefill pass (null: every sequence's full context, at most <see cref="Model.WorkspaceShape.MaxDefaultPrefillTokens"/>).</summary>
    public int? PrefillChunk { get; init; }

    /// <summary>How decode steps are launched.</summary>
    public DecodeLaunch DecodeLaunch { get; init; } = DecodeLaunch.Auto;

    /// <summary>Receives one line per device allocation and free.</summary>
    public Action<string>? AllocationLog { get; init; }

    /// <summary>Kernel launch shapes (null: defaults for the device).</summary>
    public KernelTuning? Tuning { get; init; }
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
