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
public sealed record GeneratedToken(int Id, string Text, int Index, FinishReason? FinishReason)
{
    /// <summary>Its log-probability and the most likely alternatives, when <see cref="GenerationSettings.Logprobs"/> asked for them.</summary>
    public TokenLogprobs? Logprobs { get; init; }

    /// <summary>
    /// On the first generated token (index 0) only, when <see cref="GenerationSettings.PromptLogprobs"/>
    /// asked for them: <see cref="RequestResult.PromptLogprobs"/>, available before any generated token.
    /// </summary>
    public IReadOnlyList<TokenLogprobs?>? PromptLogprobs { get; init; }
}

/// <summary>One token's log-probability (natural log) and the most likely tokens at its position, most likely first.</summary>
/// <param name="Id">the token</param>
/// <param name="Logprob">its log-probability</param>
/// <param name="Top">the most likely tokens and their log-probabilities (ties: smaller id first)</param>
public sealed record TokenLogprobs(int Id, double Logprob, IReadOnlyList<(int Id, double Logprob)> Top)
{
    /// <summary>The most alternatives a request may ask for (OpenAI's top_logprobs limit).</summary>
    public const int MaxTop = 20;

    /// <summary>log(sum exp(logits)) in float64, max-shifted (the normaliser of every log-probability here).</summary>
    public static double LogSumExp(ReadOnlySpan<float> logits)
    {
        double max = double.NegativeInfinity;
        foreach (float l in logits)
            max = Math.Max(max, l);
        double sum = 0;
        foreach (float l in logits)
            sum += Math.Exp(l - max);
        return max + Math.Log(sum);
    }

    /// <summary>
    /// The log-softmax of <paramref name="logits"/> at <paramref name="token"/>, and its <paramref name="top"/>
    /// most likely entries, computed in float64 (max-shifted log-sum-exp).
    /// </summary>
    public static TokenLogprobs From(ReadOnlySpan<float> logits, int token, int top)
    {
        double lse = LogSumExp(logits);
        // The top entries by a bounded insertion (top <= 20): larger logit first, smaller id on ties.
        var best = new List<int>(top + 1);
        for (int i = 0; i < logits.Length && top > 0; i++)
        {
            if (best.Count == top && !Better(logits, i, best[^1]))
                continue;
            int at = best.Count;
            while (at > 0 && Better(logits, i, best[at - 1]))
                at--;
            best.Insert(at, i);
            if (best.Count > top)
                best.RemoveAt(top);
        }
        var list = new (int, double)[best.Count];
        for (int i = 0; i < best.Count; i++)
            list[i] = (best[i], logits[best[i]] - lse);
        return new TokenLogprobs(token, logits[token] - lse, list);
    }

    static bool Better(ReadOnlySpan<float> logits, int a, int b) => logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
}

/// <summary>A finished request.</summary>
/// <param name="PromptTokens">the prompt</param>
/// <param name="GeneratedTokens">every generated token, the stop token included</param>
/// <param name="Text">the generated text, cut before a stop string (empty without a tokenizer: the tokens are in <paramref name="GeneratedTokens"/>)</param>
/// <param name="FinishReason">stop token or stop string, or the token limit</param>
/// <param name="QueueTime">from submission until it took a KV slot</param>
/// <param name="TimeToFirstToken">from submission until its first token</param>
/// <param name="TotalTime">from submission until it finished</param>
public sealed record RequestResult(IReadOnlyList<int> PromptTokens, IReadOnlyList<int> GeneratedTokens, string Text, FinishReason FinishReason,
    TimeSpan QueueTime, TimeSpan TimeToFirstToken, TimeSpan TotalTime)
{
    /// <summary>Each generated token's log-probabilities, when <see cref="GenerationSettings.Logprobs"/> asked for them.</summary>
    public IReadOnlyList<TokenLogprobs>? Logprobs { get; init; }

    /// <summary>
    /// When <see cref="GenerationSettings.PromptLogprobs"/> asked for them: one entry per prompt token;
    /// entry 0 is null (the first token has no context, as OpenAI returns null), entry i the
    /// log-probability of prompt token i given tokens 0..i-1 and the most likely tokens at position i.
    /// </summary>
    public IReadOnlyList<TokenLogprobs?>? PromptLogprobs { get; init; }

    /// <summary>
    /// Leading prompt tokens whose keys and values were already in the KV slot the request took
    /// (prefix reuse, <see cref="SchedulerOptions.PrefixReuse"/>) and were not prefilled again; 0 for none.
    /// </summary>
    public int ReusedPromptTokens { get; init; }

    /// <summary>Time spent computing the structured-output masks (<see cref="GenerationSettings.ResponseFormat"/>); zero without one.</summary>
    public TimeSpan MaskTime { get; init; }

    /// <summary>Structured-output masks computed (one per generated token); 0 without a response format.</summary>
    public int MaskSteps { get; init; }
}

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

    /// <summary>
    /// Prefix reuse (llama-server's slot affinity): a request that names no slot takes the free KV
    /// slot whose cached tokens (an earlier request's prompt and the generated tokens fed back)
    /// share the longest prefix with its prompt, and prefills only the rest (always at least its
    /// last token); a slot qualifies when that prefix keeps at least half of its cached tokens.
    /// Without one it takes the least recently used free slot, whose cache is then overwritten
    /// past whatever prefix it shares. Requests with a repetition penalty always prefill from position 0 (the
    /// penalty's per-slot flags are rebuilt from the prompt). Greedy tokens are the same either way;
    /// the logits agree to rounding only (reused keys and values of generated tokens were written by
    /// decode steps), so a sampled reply may rarely differ. Off: every prompt is prefilled whole.
    /// </summary>
    public bool PrefixReuse { get; init; } = true;
}
