using IlgpuLlama.Sampling;

namespace IlgpuLlama.Engine.Serving;

/// <summary>Defaults shared by the library and the command line, so both behave the same when nothing is set.</summary>
public static class GenerationDefaults
{
    /// <summary>New tokens per request when none is given.</summary>
    public const int MaxNewTokens = 64;
}

/// <summary>
/// One request to the <see cref="Scheduler"/>: a prompt, how to continue it (<see cref="Settings"/>,
/// the one settings record the facade, the CLI, the server and <see cref="Generator"/> share), and
/// where it runs.
/// </summary>
public sealed record GenerationRequest
{
    /// <summary>Prompt token ids (with BOS if the model expects one).</summary>
    public required IReadOnlyList<int> PromptTokens { get; init; }

    /// <summary>
    /// New tokens, sampling, stop tokens and strings. The scheduler stops at the model's
    /// end-of-sequence tokens besides <see cref="GenerationSettings.StopTokens"/> unless
    /// <see cref="GenerationSettings.IgnoreEos"/>.
    /// </summary>
    public GenerationSettings Settings { get; init; } = new();

    /// <summary>
    /// The KV-cache slot the request must run in (null: the first free one). A pinned request waits
    /// for its slot while others take free ones.
    /// </summary>
    public int? Slot { get; init; }

    /// <summary>
    /// Positions of <see cref="Slot"/> already holding this sequence's earlier tokens (a chat's
    /// previous turns), so the prompt continues them instead of starting at 0; needs <see cref="Slot"/>.
    /// The caller owns what the slot holds: the scheduler does not keep another request from
    /// overwriting it between two requests.
    /// </summary>
    public int StartPosition { get; init; }
}

/// <summary>One generated token as it streams out of the scheduler.</summary>
/// <param name="Id">the token id</param>
/// <param name="Text">the text it releases: empty while a UTF-8 character or a possible stop string is incomplete, and for stop and special tokens; the last token also carries whatever was held back</param>
/// <param name="Index">0 for the first generated token</param>
/// <param name="FinishReason">set on the last token of the request</param>
public sealed record GeneratedToken(int Id, string Text, int Index, FinishReason? FinishReason);

/// <summary>A finished request.</summary>
/// <param name="PromptTokens">the prompt</param>
/// <param name="GeneratedTokens">every generated token, the stop token included</param>
/// <param name="Text">the generated text (null without a tokenizer), cut before a stop string</param>
/// <param name="FinishReason">stop token or stop string, or the token limit</param>
/// <param name="QueueTime">from submission until it took a KV slot</param>
/// <param name="TimeToFirstToken">from submission until its first token</param>
/// <param name="TotalTime">from submission until it finished</param>
public sealed record RequestResult(IReadOnlyList<int> PromptTokens, IReadOnlyList<int> GeneratedTokens, string? Text, FinishReason FinishReason,
    TimeSpan QueueTime, TimeSpan TimeToFirstToken, TimeSpan TotalTime);

/// <summary>The scheduler's queue is full; retry later.</summary>
public sealed class QueueFullException(int capacity)
    : InvalidOperationException($"the request queue is full ({capacity} waiting); retry when a request has finished")
{
    /// <summary>Requests that may wait.</summary>
    public int Capacity { get; } = capacity;
}

/// <summary>Limits of a <see cref="Scheduler"/>.</summary>
public sealed record SchedulerOptions
{
    /// <summary>Requests that may wait for a KV slot; more are refused with <see cref="QueueFullException"/>.</summary>
    public int MaxQueuedRequests { get; init; } = 1024;

    /// <summary>
    /// Prompt tokens prefilled per scheduler step (null: the model's prefill workspace). Between
    /// steps every running sequence decodes one token, so a long prompt delays running streams by
    /// one such chunk at a time, never by its whole prefill.
    /// </summary>
    public int? PrefillTokensPerStep { get; init; }
}
