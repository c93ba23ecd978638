namespace IlgpuLlama.Engine;

/// <summary>Why a sequence stopped.</summary>
public enum FinishReason
{
    /// <summary>It produced a stop token.</summary>
    Stop,

    /// <summary>It reached the new-token limit (prompt + new tokens are checked against the context up front).</summary>
    Length,
}

/// <summary>One finished sequence.</summary>
public sealed record GeneratedSequence(IReadOnlyList<int> PromptTokens, IReadOnlyList<int> GeneratedTokens, FinishReason FinishReason)
{
    /// <summary>Each generated token's log-probabilities, when the settings asked for them.</summary>
    public IReadOnlyList<Serving.TokenLogprobs>? Logprobs { get; init; }
}

/// <summary>Output and timings of a generation call.</summary>
/// <param name="PrefillTokens">prompt tokens processed</param>
/// <param name="PrefillSeconds">wall time of prefill and the first token's selection</param>
/// <param name="DecodeTokens">tokens produced by decode steps (the first token of each sequence comes from prefill)</param>
/// <param name="DecodeSeconds">wall time of all decode steps</param>
/// <param name="DecodeSteps">decode steps run</param>
/// <param name="DecodeHostSeconds">host time of the decode steps before each waited for the device (validation, uploads, launches)</param>
public sealed record GenerationResult(IReadOnlyList<GeneratedSequence> Sequences, int PrefillTokens, double PrefillSeconds, int DecodeTokens, double DecodeSeconds, int DecodeSteps,
    double DecodeHostSeconds = 0)
{
    /// <summary>Prompt tokens per second.</summary>
    public double PrefillTokensPerSecond => PrefillSeconds > 0 ? PrefillTokens / PrefillSeconds : 0;

    /// <summary>Generated tokens per second over the decode steps (all sequences together).</summary>
    public double DecodeTokensPerSecond => DecodeSeconds > 0 ? DecodeTokens / DecodeSeconds : 0;
}
