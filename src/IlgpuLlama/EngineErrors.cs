using System.Text.RegularExpressions;

namespace IlgpuLlama;

/// <summary>
/// A setting or request value a caller of the engine controls. Engine messages name these through
/// placeholders (<see cref="EngineParameters"/>) instead of a front end's spelling, so the CLI shows
/// <c>--max-seq-len</c>, a server shows its JSON field, and a program using the library sees the
/// property it set (<c>MaxSeqLen</c>).
/// </summary>
public enum EngineParameter
{
    /// <summary>The model directory.</summary>
    Model,

    /// <summary>KV-cache slots (sequences decoded together).</summary>
    MaxBatchSize,

    /// <summary>Positions per KV-cache slot.</summary>
    MaxSeqLen,

    /// <summary>Prompt tokens per prefill pass.</summary>
    PrefillChunk,

    /// <summary>Weight format on the device.</summary>
    WeightFormat,

    /// <summary>What the KV cache stores per value (fp16, fp32).</summary>
    KvCacheType,

    /// <summary>How matmuls and RMSNorm sum (fp32, fp64).</summary>
    Accumulation,

    /// <summary>Which accelerator.</summary>
    Device,

    /// <summary>Launching decode kernels one by one instead of replaying a CUDA graph.</summary>
    DirectLaunch,

    /// <summary>New tokens per sequence.</summary>
    MaxNewTokens,

    /// <summary>Prompt token ids given directly.</summary>
    Tokens,

    /// <summary>Softmax temperature.</summary>
    Temperature,

    /// <summary>Top-k filter.</summary>
    TopK,

    /// <summary>Top-p (nucleus) filter.</summary>
    TopP,

    /// <summary>Min-p filter.</summary>
    MinP,

    /// <summary>Repetition penalty.</summary>
    RepetitionPenalty,

    /// <summary>Random seed.</summary>
    Seed,

    /// <summary>A directory a command writes (a quantised model).</summary>
    OutputDirectory,

    /// <summary>Tokens per perplexity window.</summary>
    Context,
}

/// <summary>
/// Placeholders for <see cref="EngineParameter"/> names inside engine messages (<c>"{MaxSeqLen}"</c>),
/// and their rendering: <see cref="Render"/> replaces each with a front end's name for it.
/// </summary>
public static partial class EngineParameters
{
    /// <summary>Placeholder of <see cref="EngineParameter.Model"/>.</summary>
    public const string Model = "{Model}";

    /// <summary>Placeholder of <see cref="EngineParameter.MaxBatchSize"/>.</summary>
    public const string MaxBatchSize = "{MaxBatchSize}";

    /// <summary>Placeholder of <see cref="EngineParameter.MaxSeqLen"/>.</summary>
    public const string MaxSeqLen = "{MaxSeqLen}";

    /// <summary>Placeholder of <see cref="EngineParameter.PrefillChunk"/>.</summary>
    public const string PrefillChunk = "{PrefillChunk}";

    /// <summary>Placeholder of <see cref="EngineParameter.WeightFormat"/>.</summary>
    public const string WeightFormat = "{WeightFormat}";

    /// <summary>Placeholder of <see cref="EngineParameter.KvCacheType"/>.</summary>
    public const string KvCacheType = "{KvCacheType}";

    /// <summary>Placeholder of <see cref="EngineParameter.Accumulation"/>.</summary>
    public const string Accumulation = "{Accumulation}";

    /// <summary>Placeholder of <see cref="EngineParameter.Device"/>.</summary>
    public const string Device = "{Device}";

    /// <summary>Placeholder of <see cref="EngineParameter.DirectLaunch"/>.</summary>
    public const string DirectLaunch = "{DirectLaunch}";

    /// <summary>Placeholder of <see cref="EngineParameter.MaxNewTokens"/>.</summary>
    public const string MaxNewTokens = "{MaxNewTokens}";

    /// <summary>Placeholder of <see cref="EngineParameter.Tokens"/>.</summary>
    public const string Tokens = "{Tokens}";

    /// <summary>Placeholder of <see cref="EngineParameter.Temperature"/>.</summary>
    public const string Temperature = "{Temperature}";

    /// <summary>Placeholder of <see cref="EngineParameter.TopK"/>.</summary>
    public const string TopK = "{TopK}";

    /// <summary>Placeholder of <see cref="EngineParameter.TopP"/>.</summary>
    public const string TopP = "{TopP}";

    /// <summary>Placeholder of <see cref="EngineParameter.MinP"/>.</summary>
    public const string MinP = "{MinP}";

    /// <summary>Placeholder of <see cref="EngineParameter.RepetitionPenalty"/>.</summary>
    public const string RepetitionPenalty = "{RepetitionPenalty}";

    /// <summary>Placeholder of <see cref="EngineParameter.Seed"/>.</summary>
    public const string Seed = "{Seed}";

    /// <summary>Placeholder of <see cref="EngineParameter.OutputDirectory"/>.</summary>
    public const string OutputDirectory = "{OutputDirectory}";

    /// <summary>Placeholder of <see cref="EngineParameter.Context"/>.</summary>
    public const string Context = "{Context}";

    [GeneratedRegex(@"\{([A-Za-z]+)\}")]
    private static partial Regex Placeholder();

    /// <summary>How a program using the library sets each parameter (the default rendering).</summary>
    public static string LibraryName(EngineParameter p) => p switch
    {
        EngineParameter.Model => "the model directory",
        EngineParameter.DirectLaunch => "DecodeLaunch.Direct",
        EngineParameter.Device => "DeviceKind",
        EngineParameter.OutputDirectory => "the output directory",
        _ => p.ToString(),
    };

    /// <summary>Replaces every known placeholder of <paramref name="template"/> with <paramref name="name"/>(parameter).</summary>
    public static string Render(string template, Func<EngineParameter, string> name) =>
        Placeholder().Replace(template, m => Enum.TryParse<EngineParameter>(m.Groups[1].Value, out var p) ? name(p) : m.Value);
}

/// <summary>An engine error whose message names parameters through <see cref="EngineParameters"/> placeholders.</summary>
public interface IEngineMessage
{
    /// <summary>The message with placeholders (render it with <see cref="EngineParameters.Render"/>).</summary>
    string Template { get; }

    /// <summary>The parameter the error is about, when there is one.</summary>
    EngineParameter? Parameter { get; }
}

/// <summary>
/// A setting or request the engine cannot accept. <see cref="Exception.Message"/> names parameters as
/// a library user sets them; <see cref="IEngineMessage.Template"/> lets a front end name them its way.
/// </summary>
public sealed class EngineArgumentException : ArgumentException, IEngineMessage
{
    /// <summary>Creates the exception from a message with parameter placeholders.</summary>
    public EngineArgumentException(string template, EngineParameter? parameter = null, Exception? inner = null)
        : base(EngineParameters.Render(template, EngineParameters.LibraryName), inner)
    {
        Template = template;
        Parameter = parameter;
    }

    /// <inheritdoc/>
    public string Template { get; }

    /// <inheritdoc/>
    public EngineParameter? Parameter { get; }
}

/// <summary>The engine cannot do what was asked in this environment (no GPU, a failed capture, bad data found on the way).</summary>
public sealed class EngineStateException : InvalidOperationException, IEngineMessage
{
    /// <summary>Creates the exception from a message with parameter placeholders.</summary>
    public EngineStateException(string template, EngineParameter? parameter = null, Exception? inner = null)
        : base(EngineParameters.Render(template, EngineParameters.LibraryName), inner)
    {
        Template = template;
        Parameter = parameter;
    }

    /// <inheritdoc/>
    public string Template { get; }

    /// <inheritdoc/>
    public EngineParameter? Parameter { get; }
}
