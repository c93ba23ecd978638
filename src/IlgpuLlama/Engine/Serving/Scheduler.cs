using System.Diagnostics;
using System.Security.Cryptography;
using IlgpuLlama.Constraints;
using IlgpuLlama.Text;

namespace IlgpuLlama.Engine.Serving;

/// <summary>Totals of a scheduler's work, for tokens/s lines.</summary>
/// <param name="PrefillTokens">prompt tokens prefilled</param>
/// <param name="PrefillSeconds">wall time of the prefill passes (with their selection)</param>
/// <param name="DecodeTokens">tokens produced by decode steps</param>
/// <param name="DecodeSeconds">wall time of the decode steps</param>
/// <param name="DecodeSteps">decode steps run</param>
/// <param name="DecodeHostSeconds">host time of the decode steps before each waited for the device</param>
public sealed record SchedulerStats(long PrefillTokens, double PrefillSeconds, long DecodeTokens, double DecodeSeconds, long DecodeSteps, double DecodeHostSeconds)
{
    /// <summary>Requests that reused a cached prompt prefix (<see cref="SchedulerOptions.PrefixReuse"/>).</summary>
    public long PrefixReuseHits { get; init; }

    /// <summary>Prompt tokens taken from a slot's cache instead of prefilled.</summary>
    public long ReusedPromptTokens { get; init; }

    /// <summary>Prompt tokens a choice of a group (<see cref="Scheduler.SubmitGroup"/>) copied from another choice's slot instead of prefilling them.</summary>
    public long SharedPromptTokens { get; init; }

    /// <summary>Structured-output masks computed (one per token of a request with a response format).</summary>
    public long MaskSteps { get; init; }

    /// <summary>Host time of those masks (the vocabulary trie walks and applying them to the logits).</summary>
    public double MaskSeconds { get; init; }

    /// <summary>Mean structured-output mask time per masked token in milliseconds (0 when none was masked).</summary>
    public double MaskMillisecondsPerStep => MaskSteps == 0 ? 0 : MaskSeconds * 1000 / MaskSteps;
}

/// <summary>
/// Continuous batching over the model's KV-cache slots. Requests wait in a queue and take a slot as
/// soon as one is free. Each <see cref="Step"/> prefills at most
/// <see cref="SchedulerOptions.PrefillTokensPerStep"/> prompt tokens (a long prompt spans steps) and
/// then decodes one token for every sequence past its prompt, so running streams keep going while
/// new prompts come in. A finished or cancelled request frees its slot at once.
/// <para>Prefix reuse (<see cref="SchedulerOptions.PrefixReuse"/>): the scheduler remembers which
/// tokens each slot's cache holds when its request ends (prompt, and the generated tokens fed
/// back: all but the last); a request that names no slot takes the free slot with the longest
/// common prefix (ties and no match: the least recently used) and prefills only the rest.</para>
/// <para>A request's tokens do not depend on what shares the batch: each row of a pass is computed
/// on its own with its own temperature and repetition penalty (data on the device), and a row whose
/// logits are NaN fails only its own request.</para>
/// <para>This is the engine's one generation loop: the facade, the CLI, the server and
/// <see cref="Generator"/> all submit <see cref="GenerationRequest"/>s here.</para>
/// <para><see cref="Step"/> runs on one thread: the one started by <see cref="Start"/>, or the
/// caller's (tests drive it step by step). <see cref="Submit"/> and cancellation are thread-safe.</para>
/// </summary>
public sealed class Scheduler : IDisposable
{
    readonly object gate = new();
    readonly LinkedList<ScheduledRequest> queue = new();
    readonly ScheduledRequest?[] slots;
    readonly List<ScheduledRequest> running = []; // admission order
    readonly LlamaTokenizer? tokenizer;
    readonly HashSet<int> endOfSequence;
    readonly object stepGate = new(); // held by RunUntilIdle during each step; Dispose waits on it
    bool steppingInline;
    readonly SemaphoreSlim wake = new(0);
    readonly int prefillPerStep;
    Thread? loop;
    volatile bool stopping;
    long nextId;
    long prefillTokens, decodeTokens, decodeSteps, reuseHits, reusedTokens, sharedTokens, maskSteps;
    readonly int[]?[] cached; // per slot: the tokens its cache holds at positions 0.. (null: unknown)
    readonly long[] lastUsed; // per slot: when its last request ended (the LRU order)
    long clock;
    double prefillSeconds, decodeSeconds, decodeHostSeconds, maskSeconds;

    /// <param name="model">the model whose KV slots are scheduled</param>
    /// <param name="tokenizer">for text and stop strings (null: token ids only)</param>
    /// <param name="options">limits (null: defaults)</param>
    public Scheduler(LlamaModel model, LlamaTokenizer? tokenizer = null, SchedulerOptions? options = null)
    {
        Model = model;
        this.tokenizer = tokenizer;
        Options = options ?? new SchedulerOptions();
        if (Options.MaxQueuedRequests < 0)
            throw new ArgumentOutOfRangeException(nameof(options), Options.MaxQueuedRequests, "MaxQueuedRequests must be >= 0");
        if (Options.PrefillTokensPerStep is < 1)
            throw new ArgumentOutOfRangeException(nameof(options), Options.PrefillTokensPerStep, "PrefillTokensPerStep must be >= 1");
        slots = new ScheduledRequest?[model.MaxBatch];
        cached = new int[]?[model.MaxBatch];
        lastUsed = new long[model.MaxBatch];
        endOfSequence = [.. model.Config.EosTokenIds];
        if (tokenizer is not null)
            endOfSequence.UnionWith(tokenizer.StopIds);
        prefillPerStep = Math.Min(Options.PrefillTokensPerStep ?? int.MaxValue, model.Plan.Shape.PrefillTokens);
    }

    /// <summary>The model.</summary>
    public LlamaModel Model { get; }

    /// <summary>The model's end-of-sequence tokens (config and tokenizer): every request stops at them unless its settings ignore them.</summary>
    public IReadOnlyCollection<int> EndOfSequenceTokens => endOfSequence;

    /// <summary>The limits.</summary>
    public SchedulerOptions Options { get; }

    /// <summary>Requests waiting for a slot.</summary>
    public int QueuedCount
    {
        get { lock (gate) return queue.Count; }
    }

    /// <summary>Requests holding a slot.</summary>
    public int RunningCount
    {
        get { lock (gate) return running.Count; }
    }

    /// <summary>KV-cache slots held by a request.</summary>
    public int SlotsInUse
    {
        get { lock (gate) return slots.Count(s => s is not null); }
    }

    /// <summary>KV-cache slots (the model's batch size).</summary>
    public int SlotCount => slots.Length;

    /// <summary>Whether any request is queued or running.</summary>
    public bool HasWork
    {
        get { lock (gate) return queue.Count > 0 || running.Count > 0; }
    }

    /// <summary>Work done so far.</summary>
    public SchedulerStats Stats
    {
        get
        {
            lock (gate)
                return new(prefillTokens, prefillSeconds, decodeTokens, decodeSeconds, decodeSteps, decodeHostSeconds)
                {
                    PrefixReuseHits = reuseHits,
                    ReusedPromptTokens = reusedTokens,
                    SharedPromptTokens = sharedTokens,
                    MaskSteps = maskSteps,
                    MaskSeconds = maskSeconds,
                };
        }
    }

    /// <summary>
    /// Queues a request. Throws <see cref="EngineArgumentException"/> for a request that can never
    /// run (bad tokens, prompt + new tokens over the context, bad sampling options) and
    /// <see cref="QueueFullException"/> when the queue is full.
    /// </summary>
    public ScheduledRequest Submit(GenerationRequest request, CancellationToken cancellation = default)
    {
        Validate(request);
        ScheduledRequest handle;
        lock (gate)
        {
            ObjectDisposedException.ThrowIf(stopping, this);
            handle = new ScheduledRequest(this, nextId + 1, request, tokenizer);
            queue.AddLast(handle);
            // Requests that take (or, as choices of a group, hold) a free slot at the next step do
            // not count as waiting (a request pinned to a busy slot does).
            if (queue.Count - Admissions().Count > Options.MaxQueuedRequests)
            {
                queue.RemoveLast();
                throw new QueueFullException(Options.MaxQueuedRequests);
            }
            nextId++;
        }
        handle.Watch(cancellation);
        wake.Release();
        return handle;
    }

    /// <summary>
    /// Queues <paramref name="n"/> choices of one prompt (OpenAI's <c>n</c>) that share its prefill.
    /// Choice i is <paramref name="request"/> with <see cref="GenerationSettings.SamplingStream"/> + i and
    /// <see cref="ScheduledRequest.Choice"/> i; all draw from one seed (drawn here when the sampling
    /// options have none), so choice i samples exactly what a lone request with that stream and seed
    /// would, and greedy choices are all the lone request's output. Returns the handles in choice order.
    /// <para>Admission: the choices queue in order like n requests. The first to take a slot prefills
    /// the prompt (with prefix reuse as usual); the others hold a free slot each meanwhile (FIFO, so a
    /// later request cannot take it) or wait for one. Once the prompt is prefilled, each of them copies
    /// the prompt's keys and values from a slot of the group that holds them
    /// (<see cref="LlamaModel.CopySequence"/>, a device copy) and samples its first token from its own
    /// stream on the same last-position logits (and gets the same prompt logprobs). With fewer free
    /// slots than n the rest are admitted as slots free, copying from any choice still running; when
    /// none holding the prompt is left (all finished or cancelled), the next choice prefills it again
    /// (<see cref="SchedulerStats.SharedPromptTokens"/> counts the copied tokens). Cancelling one
    /// choice cancels only it. Errors as <see cref="Submit"/>; a group names no slot and no start position.</para>
    /// </summary>
    public IReadOnlyList<ScheduledRequest> SubmitGroup(GenerationRequest request, int n, CancellationToken cancellation = default)
    {
        if (n < 1)
            throw new EngineArgumentException($"n {n} must be at least 1 (the choices of the prompt)");
        Validate(request);
        if (n == 1)
            return [Submit(request, cancellation)];
        if (request.Slot is not null || request.StartPosition != 0)
            throw new EngineArgumentException("the choices of a group start a new sequence each in a slot of its own; give no slot and no start position");
        var settings = request.Settings;
        if (!settings.Sampling.IsGreedy && settings.Sampling.Seed is null)
            settings = settings with { Sampling = settings.Sampling with { Seed = BitConverter.ToUInt64(RandomNumberGenerator.GetBytes(sizeof(ulong))) } };
        var group = new ChoiceGroup();
        var handles = new ScheduledRequest[n];
        lock (gate)
        {
            ObjectDisposedException.ThrowIf(stopping, this);
            for (int i = 0; i < n; i++)
            {
                var choice = request with { Settings = settings with { SamplingStream = settings.SamplingStream + i } };
                handles[i] = new ScheduledRequest(this, nextId + 1 + i, choice, tokenizer) { Group = group, Choice = i };
                queue.AddLast(handles[i]);
            }
            if (queue.Count - Admissions().Count > Options.MaxQueuedRequests)
            {
                for (int i = 0; i < n; i++)
                    queue.RemoveLast();
                throw new QueueFullException(Options.MaxQueuedRequests);
            }
            nextId += n;
        }
        foreach (var h in handles)
            h.Watch(cancellation);
        wake.Release();
        return handles;
    }

    void Validate(GenerationRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        var r = request.Settings ?? throw new EngineArgumentException("the request has no settings; give GenerationSettings (new() for the defaults)");
        int prompt = request.PromptTokens.Count;
        if (prompt == 0)
            throw new EngineArgumentException("the prompt has no tokens; give at least one token", EngineParameter.Tokens);
        foreach (int t in request.PromptTokens)
            if (t < 0 || t >= Model.Config.VocabSize)
                throw new EngineArgumentException($"token id {t} is outside the vocabulary (0..{Model.Config.VocabSize - 1})", EngineParameter.Tokens);
        if (r.MaxNewTokens < 1)
            throw new EngineArgumentException($"{EngineParameters.MaxNewTokens} {r.MaxNewTokens} must be at least 1", EngineParameter.MaxNewTokens);
        if (request.Slot is int slot && (slot < 0 || slot >= Model.MaxBatch))
            throw new EngineArgumentException($"cache slot {slot} does not exist (slots are 0..{Model.MaxBatch - 1}); raise {EngineParameters.MaxBatchSize}", EngineParameter.MaxBatchSize);
        int start = request.StartPosition;
        if (start < 0 || (start > 0 && request.Slot is null))
            throw new EngineArgumentException($"start position {start} must be 0, or continue a sequence in a given cache slot (set the slot)");
        // In long: MaxNewTokens near int.MaxValue would wrap the sum negative and pass the check.
        long need = (long)start + prompt + r.MaxNewTokens;
        string earlier = start > 0 ? $"{start} earlier tokens + " : "";
        if (need > Model.MaxSeq)
            throw new EngineArgumentException(
                $"{earlier}the prompt's {prompt} tokens + {r.MaxNewTokens} new tokens = {need} exceeds {EngineParameters.MaxSeqLen} {Model.MaxSeq}; " +
                $"shorten the prompt, lower {EngineParameters.MaxNewTokens} or raise {EngineParameters.MaxSeqLen}", EngineParameter.MaxSeqLen);
        r.Sampling.Validate();
        if (r.Logprobs is int k && (k < 0 || k > TokenLogprobs.MaxTop))
            throw new EngineArgumentException($"logprobs {k} must be 0 to {TokenLogprobs.MaxTop} (the most likely tokens returned beside the chosen one)");
        if (r.PromptLogprobs is int pk && (pk < 0 || pk > TokenLogprobs.MaxTop))
            throw new EngineArgumentException($"prompt logprobs {pk} must be 0 to {TokenLogprobs.MaxTop} (the most likely tokens returned beside each prompt token)");
        if (r.LogitBias is { } bias)
            foreach (var (id, value) in bias)
            {
                if (id < 0 || id >= Model.Config.VocabSize)
                    throw new EngineArgumentException($"logit bias for token {id}: the vocabulary's ids are 0 to {Model.Config.VocabSize - 1}");
                if (!float.IsFinite(value) || Math.Abs(value) > GenerationSettings.MaxLogitBias)
                    throw new EngineArgumentException($"logit bias {value} for token {id} must be a number from -{GenerationSettings.MaxLogitBias} to {GenerationSettings.MaxLogitBias}");
            }
        if (r.StopStrings.Count > 0 && tokenizer is null)
            throw new EngineArgumentException("stop strings need the model's tokenizer, and none was loaded; give stop token ids instead");
        if (r.ResponseFormat is { } grammar)
        {
            if (tokenizer is null)
                throw new EngineArgumentException("a response format needs the model's tokenizer (its token bytes), and none was loaded");
            if (r.IgnoreEos)
                throw new EngineArgumentException("a response format ends the text with an end-of-sequence token; do not ignore them");
            if (r.MaxNewTokens < grammar.MinBytes)
                throw new EngineArgumentException(
                    $"{EngineParameters.MaxNewTokens} {r.MaxNewTokens} is too few for the response format: its shortest JSON text has {grammar.MinBytes} bytes; allow at least {grammar.MinBytes}",
                    EngineParameter.MaxNewTokens);
        }
    }

    internal void Cancel(ScheduledRequest r)
    {
        lock (gate)
        {
            if (r.State == RequestState.Finished)
                return;
            if (r.State == RequestState.Queued)
            {
                queue.Remove(r);
                r.Fail(new OperationCanceledException());
                return;
            }
            r.CancelRequested = true;
        }
        wake.Release();
    }

    /// <summary>
    /// The free slot for an unpinned request that no queued pinned request waits for and no
    /// admission took (-1: none), with the prompt tokens it reuses. With prefix reuse: the one whose
    /// cached tokens share the longest prefix with the prompt (at most all but its last token, which
    /// must be prefilled for the first token's logits), among those where that prefix keeps at least
    /// half of the slot's cached tokens (llama-server's slot-prompt similarity 0.5, so a new
    /// conversation sharing only the template's first tokens does not evict one in progress); ties
    /// and no such slot: the least recently used free slot (reusing whatever prefix it shares).
    /// Without prefix reuse: the first free slot.
    /// </summary>
    (int Slot, int Reused) FreeSlot(ScheduledRequest r, HashSet<int> reserved, HashSet<int> taken)
    {
        // Prompt logprobs need the logits of every prompt position: nothing may come from the cache.
        bool reuse = Options.PrefixReuse && r.Request.StartPosition == 0 && r.Mode.RepetitionPenalty == 1f && r.PromptLogprobs is null;
        int best = -1, bestReused = 0, lru = -1;
        for (int i = 0; i < slots.Length; i++)
        {
            if (slots[i] is not null || reserved.Contains(i) || taken.Contains(i))
                continue;
            if (!Options.PrefixReuse)
                return (i, 0);
            if (lru < 0 || lastUsed[i] < lastUsed[lru])
                lru = i;
            int n = reuse ? CommonPrefix(cached[i], r.Request.PromptTokens) : 0;
            if (n > 0 && 2L * n >= cached[i]!.Length && (n > bestReused || (n == bestReused && lastUsed[i] < lastUsed[best])))
                (best, bestReused) = (i, n);
        }
        if (best >= 0)
            return (best, bestReused);
        return lru < 0 ? (-1, 0) : (lru, reuse ? CommonPrefix(cached[lru], r.Request.PromptTokens) : 0);
    }

    /// <summary>Tokens at the start of <paramref name="prompt"/> that <paramref name="cache"/> holds, leaving its last token to prefill.</summary>
    static int CommonPrefix(int[]? cache, IReadOnlyList<int> prompt)
    {
        if (cache is null)
            return 0;
        int max = Math.Min(cache.Length, prompt.Count - 1), n = 0;
        while (n < max && cache[n] == prompt[n])
            n++;
        return n;
    }

    /// <summary>Frees finished and cancelled requests' slots and gives free slots to queued requests, in order.</summary>
    void Admit()
    {
        lock (gate)
        {
            foreach (var r in running.Where(r => r.CancelRequested && r.State != RequestState.Finished).ToArray())
                r.Fail(new OperationCanceledException());
            foreach (var r in running.Where(r => r.State == RequestState.Finished).ToArray())
                Release(r);
            foreach (var (r, slot, reused, copyFrom, wait) in Admissions())
            {
                if (wait)
                    continue;
                queue.Remove(r);
                // What the slot holds before the request's own positions: the reused prefix, or for
                // a pinned continuation the earlier turns (unknown when the record is shorter).
                int start = r.Request.StartPosition;
                int[]? cacheBase = reused > 0 ? r.Request.PromptTokens.Take(reused).ToArray()
                    : start == 0 ? []
                    : cached[slot] is { } c && c.Length >= start ? c[..start] : null;
                cached[slot] = null; // being overwritten
                r.Admit(slot, reused, cacheBase);
                r.CopyFrom = copyFrom;
                if (reused > 0)
                {
                    reuseHits++;
                    reusedTokens += reused;
                }
                slots[slot] = r;
                running.Add(r);
            }
        }
    }

    /// <summary>
    /// The queued requests that take a slot now, with their slots (under the gate): in order; a
    /// request pinned to a busy slot waits without holding back the others, and no unpinned request
    /// takes a slot a queued pinned one waits for (that slot may hold the sequence it continues).
    /// A choice of a group (<see cref="SubmitGroup"/>) copies the prompt from a slot of its group
    /// that holds it (CopyFrom); while another choice prefills the prompt it holds a free slot
    /// without taking it (Wait).
    /// </summary>
    List<(ScheduledRequest Request, int Slot, int Reused, int CopyFrom, bool Wait)> Admissions()
    {
        var reserved = queue.Where(q => q.Request.Slot is not null).Select(q => q.Request.Slot!.Value).ToHashSet();
        var taken = new HashSet<int>();
        var admitted = new List<(ScheduledRequest, int, int, int, bool)>();
        var prefilling = new HashSet<ChoiceGroup>(); // groups a choice of which prefills the prompt (running or admitted now)
        foreach (var r in slots)
            if (r is { Group: { } g, State: RequestState.Prefilling, CopyFrom: < 0 })
                prefilling.Add(g);
        foreach (var r in queue)
        {
            int copyFrom = r.Group is { First: not null } group ? PromptHolder(group) : -1;
            bool wait = r.Group is { } g && copyFrom < 0 && !prefilling.Add(g);
            var (slot, reused) = r.Request.Slot is int pinned ? (pinned, 0) : FreeSlot(r, reserved, taken);
            if (slot >= 0 && slots[slot] is null && taken.Add(slot))
                admitted.Add((r, slot, copyFrom >= 0 ? 0 : reused, copyFrom, wait));
            else if (r.Request.Slot is null)
                break; // no free slot is left for unpinned requests
        }
        return admitted;
    }

    /// <summary>A slot whose request belongs to <paramref name="group"/> and holds its whole prompt (-1: none).</summary>
    int PromptHolder(ChoiceGroup group)
    {
        for (int i = 0; i < slots.Length; i++)
            if (slots[i] is { State: RequestState.Decoding, CacheUnknown: false } m && m.Group == group)
                return i;
        return -1;
    }

    void Release(ScheduledRequest r)
    {
        lock (gate)
        {
            if (r.Slot >= 0 && slots[r.Slot] == r)
            {
                slots[r.Slot] = null;
                cached[r.Slot] = CachedAfter(r);
                lastUsed[r.Slot] = ++clock;
            }
            running.Remove(r);
        }
    }

    /// <summary>
    /// The tokens <paramref name="r"/>'s slot holds once it has ended: what was there before its
    /// positions, the prompt prefilled so far, and the generated tokens fed back by decode steps
    /// (all but the last, which was chosen but never fed); null (nothing reusable) when unknown or
    /// when the request failed.
    /// </summary>
    static int[]? CachedAfter(ScheduledRequest r)
    {
        if (r.CacheBase is not { } prefix || r.CacheUnknown)
            return null;
        var prompt = r.Request.PromptTokens;
        var generated = r.Generated;
        var tokens = new List<int>(prefix.Length + prompt.Count + generated.Count);
        tokens.AddRange(prefix);
        for (int i = r.Reused; i < r.Prefilled; i++)
            tokens.Add(prompt[i]);
        for (int i = 0; i < generated.Count - 1; i++)
            tokens.Add(generated[i]);
        return tokens.ToArray();
    }

    /// <summary>
    /// One scheduler step: admit queued requests into free slots, prefill up to one chunk of
    /// prompt tokens, then decode one token for every sequence past its prompt. Returns whether
    /// work remains.
    /// </summary>
    public bool Step()
    {
        Admit();
        List<ScheduledRequest> active;
        lock (gate)
            active = running.Where(r => r.State != RequestState.Finished && !r.CancelRequested).ToList();
        CopyPrompts(active.Where(r => r.State == RequestState.Prefilling && r.CopyFrom >= 0).ToList());
        Prefill(active.Where(r => r.State == RequestState.Prefilling).ToList());
        // Choices that copied their group's prompt during the prefill decode with it.
        lock (gate)
            active = running.Where(r => r.State == RequestState.Decoding && !r.CancelRequested).ToList();
        Decode(active);
        Admit();
        return HasWork;
    }

    /// <summary>Prefills the next prompt pieces, at most one chunk in all, oldest requests first.</summary>
    void Prefill(List<ScheduledRequest> waiting)
    {
        if (waiting.Count == 0)
            return;
        int budget = prefillPerStep;
        var pieces = new List<(ScheduledRequest Request, SequenceInput Input, bool Last)>();
        foreach (var r in waiting)
        {
            if (budget == 0)
                break;
            var prompt = r.Request.PromptTokens;
            int take = Math.Min(prompt.Count - r.Prefilled, budget);
            int[] tokens = prompt.Skip(r.Prefilled).Take(take).ToArray();
            pieces.Add((r, new SequenceInput(r.Slot, r.Request.StartPosition + r.Prefilled, tokens), r.Prefilled + take == prompt.Count));
            budget -= take;
        }
        // One pass for all pieces: a piece that ends its prompt selects with its request's mode
        // (each row's temperature and penalty are data on the device); a piece in the middle of a
        // prompt takes the argmax, which is not used.
        var modes = pieces.Select(p => p.Last ? p.Request.Mode : SelectMode.ArgMax).ToArray();
        var sw = Stopwatch.StartNew();
        try
        {
            var inputs = pieces.Select(m => m.Input).ToArray();
            var allLogits = pieces.Select(p => p.Request.PromptLogprobs is not null).ToArray();
            var step = allLogits.Contains(true)
                ? Model.Prefill(inputs, modes, allLogits, (seq, position, row) => PromptLogprob(pieces[seq].Request, position, row))
                : Model.Prefill(inputs, modes);
            var chosen = new int[pieces.Count];
            for (int i = 0; i < pieces.Count; i++)
                chosen[i] = pieces[i].Last ? ChooseOrFail(step, i, pieces[i].Request) : -1;
            lock (gate)
            {
                prefillTokens += pieces.Sum(m => m.Input.Tokens.Count);
                prefillSeconds += sw.Elapsed.TotalSeconds;
            }
            bool kept = false;
            for (int i = 0; i < pieces.Count; i++)
            {
                var (r, input, last) = pieces[i];
                r.Prefilled += input.Tokens.Count;
                if (!last || chosen[i] < 0)
                    continue;
                r.State = RequestState.Decoding;
                if (r.Group is { First: null } g)
                {
                    KeepFirstChoice(g, step, i, r);
                    kept = true;
                }
            }
            // The other choices of a group copy the prompt now, while the choice that prefilled it
            // holds its slot for sure (it may finish at its first token).
            if (kept)
                AdmitCopies();
            for (int i = 0; i < pieces.Count; i++)
                if (pieces[i].Last && chosen[i] >= 0)
                    Take(pieces[i].Request, chosen[i]);
        }
        catch (Exception e)
        {
            foreach (var m in pieces)
                Finish(m.Request, e);
        }
    }

    /// <summary>What the other choices of a group need from the one that prefilled the prompt: the selection of its last position, its logits, the prompt logprobs.</summary>
    void KeepFirstChoice(ChoiceGroup g, StepResult step, int row, ScheduledRequest r)
    {
        var logits = new float[Model.Config.VocabSize];
        Model.ReadLogitsRow(row, logits);
        lock (gate)
            (g.First, g.FirstLogits, g.PromptLogprobs) = (step.Row(row), logits, r.PromptLogprobs);
    }

    /// <summary>Admits what can be admitted now and lets the choices admitted to copy a prompt copy it.</summary>
    void AdmitCopies()
    {
        Admit();
        List<ScheduledRequest> copies;
        lock (gate)
            copies = running.Where(r => r.State == RequestState.Prefilling && r.CopyFrom >= 0 && !r.CancelRequested).ToList();
        CopyPrompts(copies);
    }

    /// <summary>
    /// Choices admitted to copy their group's prompt: the prompt's keys and values come from the
    /// slot holding them (a device copy), and each samples its first token from its own stream on the
    /// logits of the prompt's last position that the group kept.
    /// </summary>
    void CopyPrompts(List<ScheduledRequest> copies)
    {
        foreach (var r in copies)
        {
            var g = r.Group!;
            var prompt = r.Request.PromptTokens;
            try
            {
                Model.CopySequence(r.CopyFrom, r.Slot, prompt);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                Finish(r, e);
                continue;
            }
            r.CopyFrom = -1;
            r.Prefilled = prompt.Count;
            r.State = RequestState.Decoding;
            if (r.PromptLogprobs is { } lp && g.PromptLogprobs is { } kept)
                kept.CopyTo(lp, 0);
            lock (gate)
                sharedTokens += prompt.Count;
            int token = ChooseOrFail(g.First!, 0, r, g.FirstLogits);
            if (token >= 0)
                Take(r, token);
        }
    }

    /// <summary>Row <paramref name="position"/> of a prompt predicts the prompt's next token: its log-probabilities.</summary>
    static void PromptLogprob(ScheduledRequest r, int position, ReadOnlySpan<float> row)
    {
        int next = position - r.Request.StartPosition + 1;
        var prompt = r.Request.PromptTokens;
        if (next < prompt.Count)
            r.PromptLogprobs![next] = TokenLogprobs.From(row, prompt[next], r.Request.Settings.PromptLogprobs!.Value);
    }

    /// <summary>
    /// One decode step for every sequence past its prompt, in one pass: each row selects with its
    /// request's temperature and penalty (data on the device), greedy rows read their argmax, and
    /// the pass returns the most candidates any row asked for (a sampler reads only as many as its
    /// top-k), so a request's tokens never depend on its neighbours.
    /// </summary>
    void Decode(List<ScheduledRequest> members)
    {
        if (members.Count == 0)
            return;
        var sw = Stopwatch.StartNew();
        try
        {
            var rows = members.Select(r => new DecodeRow(r.Slot, r.NextPosition, r.Generated[^1])).ToArray();
            var step = Model.Decode(rows, members.Select(r => r.Mode).ToArray());
            var chosen = new int[members.Count];
            // A reply that became text under a call-or-text grammar (tool_choice auto) is masked no more: it
            // leaves the host path and samples on the device again.
            var constrained = Enumerable.Range(0, members.Count).Where(i => members[i].Constraint is { IsText: false }).ToArray();
            if (constrained.Length > 1)
            {
                // Structured-output masks are host work per request: their rows are read here, one
                // after another, and masked and sampled in parallel (each request owns its automaton
                // and sampler, so its token is the same either way).
                var rowsRead = constrained.Select(i => ReadRow(i)).ToArray();
                try
                {
                    Parallel.For(0, constrained.Length, k => chosen[constrained[k]] = ChooseOrFail(step, constrained[k], members[constrained[k]], rowsRead[k]));
                }
                catch (AggregateException e)
                {
                    // Fails the pass as the sequential choice would, with the exception itself.
                    System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(e.InnerExceptions[0]);
                }
            }
            for (int i = 0; i < members.Count; i++)
                if (constrained.Length <= 1 || members[i].Constraint is null or { IsText: true })
                    chosen[i] = ChooseOrFail(step, i, members[i]);
            lock (gate)
            {
                decodeTokens += rows.Length;
                decodeSteps++;
                decodeSeconds += sw.Elapsed.TotalSeconds;
                decodeHostSeconds += Model.LastStepHostTime.TotalSeconds;
            }
            for (int i = 0; i < members.Count; i++)
                if (chosen[i] >= 0)
                    Take(members[i], chosen[i]);
        }
        catch (Exception e)
        {
            foreach (var r in members)
                Finish(r, e);
        }
    }

    /// <summary>
    /// <see cref="Choose"/>, or -1 after failing only <paramref name="r"/> when its row cannot give a
    /// token (NaN logits): the other requests of the pass go on.
    /// </summary>
    int ChooseOrFail(StepResult step, int row, ScheduledRequest r, float[]? rowLogits = null)
    {
        try
        {
            return Choose(step, row, r, rowLogits);
        }
        catch (Exception e) when (e is EngineStateException or ArgumentException)
        {
            Finish(r, e);
            return -1;
        }
    }

    /// <summary>
    /// The token row <paramref name="row"/> of a step selects for <paramref name="r"/> (with its
    /// log-probabilities when asked for); <paramref name="rowLogits"/>: the row's full logits when they
    /// are already on the host (a group's first choice, or read for a structured-output mask), else read
    /// from the model's last step when needed.
    /// </summary>
    int Choose(StepResult step, int row, ScheduledRequest r, float[]? rowLogits = null)
    {
        if (step.ArgMax[row] < 0)
            throw new EngineStateException(
                $"the logits of request {r.Id} contain NaN; the weights or activations overflowed (try {EngineParameters.WeightFormat} bf16)", EngineParameter.WeightFormat);
        float[]? full = rowLogits;
        float[] Full() => full ??= ReadRow(row);
        int token;
        if (r.Request.Settings.LogitBias is { Count: > 0 } bias)
        {
            // The bias changes what the device selected: the row is chosen again on the host, from a
            // copy (a group's first row is shared by its choices; the logprobs are the model's own).
            var biased = (float[])Full().Clone();
            foreach (var (id, value) in bias)
                biased[id] += value;
            if (r.Constraint is { IsText: false } biasedConstraint)
                token = ChooseConstrained(r, biasedConstraint, biased, inPlace: true);
            else if (r.Sampler is null)
                token = ArgMax(biased);
            else
                token = r.Sampler.SampleFull(biased).TokenId;
        }
        else if (r.Constraint is { IsText: false } constraint)
            token = ChooseConstrained(r, constraint, Full());
        else if (r.Sampler is null)
            token = step.ArgMax[row];
        else
        {
            var result = r.Sampler.Sample(step.Logits(row), step.Ids(row), step.MaxLogit![row], step.SumExp![row], Model.Config.VocabSize);
            if (result.NeedsFullLogits)
                result = r.Sampler.SampleFull(Full());
            token = result.TokenId;
        }
        // The whole row crosses to the host only for a request that asked for log-probabilities.
        r.PendingLogprobs = r.Request.Settings.Logprobs is int top ? TokenLogprobs.From(Full(), token, top) : null;
        return token;
    }

    /// <summary>Row <paramref name="row"/> of the last pass's logits, on the host.</summary>
    float[] ReadRow(int row)
    {
        var logits = new float[Model.Config.VocabSize];
        Model.ReadLogitsRow(row, logits);
        return logits;
    }

    /// <summary>
    /// A structured-output choice: the row's disallowed tokens set to -infinity (the row already carries
    /// the repetition penalty, which leaves -infinity as it is), then the argmax or the sampler over the
    /// whole row; the automaton takes the token. The mask's time counts in <see cref="SchedulerStats.MaskSeconds"/>.
    /// </summary>
    int ChooseConstrained(ScheduledRequest r, JsonConstraint constraint, float[] logits, bool inPlace = false)
    {
        long start = Stopwatch.GetTimestamp();
        // Log-probabilities are those of the unmasked row, so it is masked in place only when none are
        // asked for (or the row is already the caller's own copy).
        float[] masked = inPlace || r.Request.Settings.Logprobs is null ? logits : (float[])logits.Clone();
        constraint.Apply(masked, r.Request.Settings.MaxNewTokens - r.Generated.Count);
        double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
        lock (gate)
        {
            maskSteps++;
            maskSeconds += seconds;
        }
        int token = r.Sampler is null ? ArgMax(masked) : r.Sampler.SampleFull(masked).TokenId;
        constraint.Accept(token);
        return token;
    }

    /// <summary>The first index of the largest value.</summary>
    static int ArgMax(float[] row)
    {
        int token = 0;
        for (int i = 1; i < row.Length; i++)
            if (row[i] > row[token])
                token = i;
        return token;
    }

    void Take(ScheduledRequest r, int token)
    {
        if (r.State == RequestState.Finished)
            return;
        bool done;
        lock (gate)
            done = r.Accept(token);
        if (done)
            Release(r);
    }

    void Finish(ScheduledRequest r, Exception e)
    {
        lock (gate)
        {
            r.CacheUnknown = true; // a failed pass may have written part of its keys and values
            if (r.State != RequestState.Finished)
                r.Fail(e);
        }
        Release(r);
    }

    /// <summary>
    /// Runs <see cref="Step"/> on the calling thread until no request is queued or running, calling
    /// <paramref name="afterStep"/> after each step (to stream what the step produced). For a caller
    /// that owns the scheduler and does not <see cref="Start"/> its thread (<see cref="Generator"/>).
    /// </summary>
    public void RunUntilIdle(Action? afterStep = null)
    {
        lock (gate)
        {
            ObjectDisposedException.ThrowIf(stopping, this);
            if (loop is not null)
                throw new InvalidOperationException("the scheduler's own thread is running; wait for requests with their Completion instead");
            if (steppingInline)
                throw new InvalidOperationException("RunUntilIdle is already running on another call");
            steppingInline = true;
        }
        try
        {
            // A Dispose from another thread stops the loop between steps (it waits for the step in flight).
            while (!stopping)
            {
                bool more;
                lock (stepGate)
                    more = !stopping && Step();
                afterStep?.Invoke();
                if (!more)
                    break;
            }
        }
        finally
        {
            lock (gate)
                steppingInline = false;
        }
    }

    // ---- the background loop --------------------------------------------------------------------

    /// <summary>Runs <see cref="Step"/> on a background thread whenever there is work.</summary>
    public void Start()
    {
        lock (gate)
        {
            ObjectDisposedException.ThrowIf(stopping, this);
            if (loop is not null)
                return;
            if (steppingInline)
                throw new InvalidOperationException("RunUntilIdle is stepping this scheduler on the caller's thread; start its own thread before or after, not during");
            loop = new Thread(Run) { IsBackground = true, Name = "ilgpu-llama scheduler" };
            loop.Start();
        }
    }

    void Run()
    {
        while (!stopping)
        {
            if (!HasWork)
            {
                wake.Wait(TimeSpan.FromMilliseconds(200));
                continue;
            }
            Step();
            // Drain wake-ups that arrived while stepping; the next HasWork check sees their work.
            while (wake.CurrentCount > 0 && wake.Wait(0)) { }
        }
    }

    /// <summary>Waits until no request is queued or running (new ones may still arrive), or the token fires.</summary>
    public async Task WhenIdleAsync(CancellationToken cancellation = default)
    {
        while (HasWork)
            await Task.Delay(10, cancellation).ConfigureAwait(false);
    }

    /// <summary>Stops the loop and cancels every queued and running request.</summary>
    public void Dispose()
    {
        lock (gate)
        {
            if (stopping)
                return;
            stopping = true;
        }
        wake.Release();
        if (loop is not null && loop != Thread.CurrentThread)
            loop.Join();
        // A step running on a RunUntilIdle caller's thread finishes first (re-entrant from that thread).
        lock (stepGate)
        lock (gate)
        {
            foreach (var r in queue.Concat(running).ToArray())
                if (r.State != RequestState.Finished)
                    r.Fail(new OperationCanceledException());
            queue.Clear();
            running.Clear();
            Array.Clear(slots);
            Array.Clear(cached);
        }
    }
}
