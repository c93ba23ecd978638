using System.Diagnostics;
using System.Threading.Channels;
using IlgpuLlama.Constraints;
using IlgpuLlama.Sampling;
using IlgpuLlama.Text;

namespace IlgpuLlama.Engine.Serving;

/// <summary>Where a request is in the scheduler.</summary>
public enum RequestState
{
    /// <summary>Waiting for a KV slot.</summary>
    Queued,

    /// <summary>In a slot, its prompt being prefilled chunk by chunk.</summary>
    Prefilling,

    /// <summary>In a slot, one token per scheduler step.</summary>
    Decoding,

    /// <summary>Done (finished, cancelled or failed); its slot is free.</summary>
    Finished,
}

/// <summary>
/// A submitted request: its tokens stream through <see cref="Tokens"/> as they are chosen and its
/// result completes <see cref="Completion"/>. <see cref="Cancel"/> (or the cancellation token given
/// at submission) ends it and frees its KV slot before the scheduler's next step; the stream and
/// the task then end with <see cref="OperationCanceledException"/>.
/// </summary>
public sealed class ScheduledRequest
{
    readonly Channel<GeneratedToken> channel = Channel.CreateUnbounded<GeneratedToken>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
    readonly TaskCompletionSource<RequestResult> completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    readonly Scheduler scheduler;
    readonly List<int> generated = [];
    readonly StreamingDecoder? decoder;
    readonly StopStringMatcher? stopStrings;
    readonly System.Text.StringBuilder? text;
    readonly HashSet<int> stopTokens;
    readonly long submitted = Stopwatch.GetTimestamp();
    readonly List<long> tokenTimes = []; // when each generated token was chosen (Stopwatch timestamps)
    long admitted, firstToken;
    CancellationTokenRegistration registration;

    internal ScheduledRequest(Scheduler scheduler, long id, GenerationRequest request, LlamaTokenizer? tokenizer)
    {
        this.scheduler = scheduler;
        Id = id;
        Request = request;
        var settings = request.Settings;
        stopTokens = [.. settings.StopTokens];
        if (!settings.IgnoreEos)
            stopTokens.UnionWith(scheduler.EndOfSequenceTokens);
        if (tokenizer is not null)
        {
            decoder = new StreamingDecoder(tokenizer, settings.IncludeSpecial);
            stopStrings = new StopStringMatcher(settings.StopStrings);
            text = new();
        }
        var s = settings.Sampling;
        int capacity = scheduler.Model.Plan.Shape.TopKCapacity;
        // One candidate past top-k shows whether the k-th logit ties the next (transformers keeps such
        // ties); without it the sampler must read the whole row whenever top-k is set.
        Mode = s.IsGreedy
            ? new SelectMode(true, 1f, s.RepetitionPenalty, 0)
            : new SelectMode(false, s.Temperature, s.RepetitionPenalty, s.TopK > 0 ? Math.Min(s.TopK + 1, capacity) : capacity);
        Sampler = s.IsGreedy ? null : new TokenSampler(s, settings.SamplingStream);
        if (settings.PromptLogprobs is not null)
            PromptLogprobs = new TokenLogprobs?[request.PromptTokens.Count];
        // Validation made sure the tokenizer is there.
        if (settings.ResponseFormat is { } grammar)
            Constraint = new JsonConstraint(grammar, TokenTrie.For(tokenizer!), stopTokens);
    }

    /// <summary>Index of the choice in its group (<see cref="Scheduler.SubmitGroup"/>); 0 for a request submitted alone.</summary>
    public int Choice { get; internal init; }

    /// <summary>Submission number (1, 2, ...).</summary>
    public long Id { get; }

    /// <summary>What was asked.</summary>
    public GenerationRequest Request { get; }

    /// <summary>Where the request is.</summary>
    public RequestState State { get; internal set; } = RequestState.Queued;

    /// <summary>The seed its sampler uses (drawn when the options had none); null when greedy.</summary>
    public ulong? Seed => Sampler?.Seed;

    /// <summary>Generated tokens, as they are chosen.</summary>
    public ChannelReader<GeneratedToken> Tokens => channel.Reader;

    /// <summary>The result, once the request has finished.</summary>
    public Task<RequestResult> Completion => completion.Task;

    /// <summary>
    /// When each generated token was chosen, from submission (the first is the time to first token;
    /// the differences are the inter-token latencies). Complete once <see cref="Completion"/> has finished.
    /// </summary>
    public IReadOnlyList<TimeSpan> TokenTimes
    {
        get
        {
            lock (tokenTimes)
                return tokenTimes.Select(t => Stopwatch.GetElapsedTime(submitted, t)).ToArray();
        }
    }

    /// <summary>Ends the request; its slot is free before the next scheduler step.</summary>
    public void Cancel() => scheduler.Cancel(this);

    // ---- used by the scheduler (on its thread) --------------------------------------------------

    internal SelectMode Mode { get; }
    internal TokenSampler? Sampler { get; }

    /// <summary>The structured-output state (null: free text).</summary>
    internal JsonConstraint? Constraint { get; }
    internal int Slot { get; set; } = -1;
    internal int Prefilled { get; set; }

    /// <summary>The choices submitted with it (null: submitted alone).</summary>
    internal ChoiceGroup? Group { get; init; }

    /// <summary>Admitted to copy its group's prompt from this slot instead of prefilling it (-1: it prefills).</summary>
    internal int CopyFrom { get; set; } = -1;
    internal bool CancelRequested { get; set; }

    /// <summary>Set when a pass failed for the request: its slot's cache content is not known.</summary>
    internal bool CacheUnknown { get; set; }
    internal IReadOnlyList<int> Generated => generated;

    /// <summary>Position of the next token to feed (earlier turns, prompt and generated tokens so far, minus the one not yet fed).</summary>
    /// <summary>The log-probabilities of the token the scheduler is about to <see cref="Accept"/> (set by its choice).</summary>
    internal TokenLogprobs? PendingLogprobs { get; set; }

    readonly List<TokenLogprobs> logprobs = [];

    /// <summary>Per prompt token, its log-probabilities (filled chunk by chunk by the prefill; null when not asked for).</summary>
    internal TokenLogprobs?[]? PromptLogprobs { get; }

    internal int NextPosition => Request.StartPosition + Request.PromptTokens.Count + generated.Count - 1;

    internal void Watch(CancellationToken token)
    {
        if (token.CanBeCanceled)
            registration = token.Register(Cancel);
    }

    /// <summary>Leading prompt tokens taken from the slot's cache instead of prefilled.</summary>
    internal int Reused { get; private set; }

    /// <summary>The tokens the slot held at positions before this request's own (known when admitted; null: unknown).</summary>
    internal int[]? CacheBase { get; private set; }

    internal void Admit(int slot, int reused, int[]? cacheBase)
    {
        Slot = slot;
        Reused = reused;
        Prefilled = reused;
        CacheBase = cacheBase;
        State = RequestState.Prefilling;
        admitted = Stopwatch.GetTimestamp();
    }

    /// <summary>Takes a chosen token: streams it, applies the stop rules; returns true when the request finished.</summary>
    internal bool Accept(int token)
    {
        long now = Stopwatch.GetTimestamp();
        if (generated.Count == 0)
            firstToken = now;
        lock (tokenTimes)
            tokenTimes.Add(now);
        generated.Add(token);
        FinishReason? finish = null;
        string piece = "";
        bool isStop = stopTokens.Contains(token);
        if (decoder is not null && !isStop)
        {
            piece = stopStrings!.Push(decoder.Push(token));
            if (stopStrings.Stopped)
                finish = FinishReason.Stop;
        }
        if (isStop)
            finish = FinishReason.Stop;
        else if (finish is null && generated.Count >= Request.Settings.MaxNewTokens)
            finish = FinishReason.Length;
        if (finish is not null && decoder is not null && !stopStrings!.Stopped)
            piece += stopStrings.Push(decoder.Flush()) + stopStrings.Flush();
        text?.Append(piece);
        if (PendingLogprobs is { } lp)
            logprobs.Add(lp);
        channel.Writer.TryWrite(new GeneratedToken(token, piece, generated.Count - 1, finish) { Logprobs = PendingLogprobs, PromptLogprobs = generated.Count == 1 ? PromptLogprobs : null });
        PendingLogprobs = null;
        if (finish is { } reason)
            Complete(reason);
        return finish is not null;
    }

    void Complete(FinishReason reason)
    {
        State = RequestState.Finished;
        long now = Stopwatch.GetTimestamp();
        var result = new RequestResult(Request.PromptTokens, generated.ToArray(), text?.ToString() ?? "", reason,
            Stopwatch.GetElapsedTime(submitted, admitted), Stopwatch.GetElapsedTime(submitted, firstToken), Stopwatch.GetElapsedTime(submitted, now))
        {
            Logprobs = Request.Settings.Logprobs is null ? null : logprobs.ToArray(),
            ReusedPromptTokens = Reused,
            PromptLogprobs = PromptLogprobs,
            MaskTime = Constraint?.MaskTime ?? TimeSpan.Zero,
            MaskSteps = Constraint?.MaskSteps ?? 0,
        };
        channel.Writer.TryComplete();
        completion.TrySetResult(result);
        registration.Dispose();
    }

    internal void Fail(Exception e)
    {
        State = RequestState.Finished;
        if (e is OperationCanceledException)
        {
            channel.Writer.TryComplete(new OperationCanceledException("the request was cancelled"));
            completion.TrySetCanceled();
        }
        else
        {
            channel.Writer.TryComplete(e);
            completion.TrySetException(e);
        }
        registration.Dispose();
    }
}

/// <summary>
/// The choices of one prompt submitted together (<see cref="Scheduler.SubmitGroup"/>): what the one
/// that prefilled the prompt leaves for the others (set under the scheduler's gate).
/// </summary>
internal sealed class ChoiceGroup
{
    /// <summary>The selection at the prompt's last position, one row (null until a choice has prefilled the prompt).</summary>
    internal StepResult? First { get; set; }

    /// <summary>That row's full logits (for samplers that need them and for logprobs).</summary>
    internal float[]? FirstLogits { get; set; }

    /// <summary>The prompt logprobs, when the choices asked for them.</summary>
    internal TokenLogprobs?[]? PromptLogprobs { get; set; }
}
