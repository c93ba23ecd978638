namespace IlgpuLlama.Engine.Serving;

/// <summary>
/// Generates for a fixed set of prompts and waits for all of them: a thin helper over the one
/// generation loop, the <see cref="Scheduler"/>, run on the calling thread (chat, <c>bench e2e</c>
/// and tests use it). Sequence i runs in cache slot i, continuing from its start position when given;
/// its sampler draws from random stream <see cref="GenerationSettings.SamplingStream"/> + i.
/// </summary>
public sealed class Generator(LlamaModel model)
{
    /// <summary>The model.</summary>
    public LlamaModel Model { get; } = model;

    /// <summary>
    /// Generates for up to max-batch prompts with one set of <paramref name="settings"/> (the stop set
    /// includes the model's end-of-sequence tokens unless the settings ignore them);
    /// <paramref name="onToken"/> sees each new token (sequence, token) after the step that chose it.
    /// </summary>
    /// <param name="prompts">token ids of each sequence's prompt</param>
    /// <param name="settings">how every sequence continues</param>
    /// <param name="onToken">called with (sequence index, token id) as tokens are chosen</param>
    /// <param name="startPositions">
    /// positions already in each sequence's cache slot before its prompt (multi-turn chat continues a
    /// sequence); null: every prompt starts a new sequence at position 0
    /// </param>
    public GenerationResult Generate(IReadOnlyList<IReadOnlyList<int>> prompts, GenerationSettings settings, Action<int, int>? onToken = null,
        IReadOnlyList<int>? startPositions = null)
    {
        ArgumentNullException.ThrowIfNull(settings);
        int n = prompts.Count;
        if (n == 0 || n > Model.MaxBatch)
            throw new EngineArgumentException($"{n} prompts given; between 1 and {EngineParameters.MaxBatchSize} {Model.MaxBatch} can be generated together", EngineParameter.MaxBatchSize);
        if (startPositions is not null && startPositions.Count != n)
            throw new EngineArgumentException($"{startPositions.Count} start positions given for {n} prompts; give one per prompt");
        using var scheduler = new Scheduler(Model, tokenizer: null, new SchedulerOptions { MaxQueuedRequests = n });
        // Submit validates each request (the scheduler's one validation); the slots are pinned so a
        // continued sequence finds its earlier tokens.
        var handles = prompts.Select((prompt, i) => scheduler.Submit(new GenerationRequest
        {
            PromptTokens = prompt,
            Settings = settings with { SamplingStream = settings.SamplingStream + i },
            Slot = i,
            StartPosition = startPositions?[i] ?? 0,
        })).ToArray();
        scheduler.RunUntilIdle(onToken is null ? null : () =>
        {
            for (int i = 0; i < n; i++)
                while (handles[i].Tokens.TryRead(out var token))
                    onToken(i, token.Id);
        });
        var failed = handles.FirstOrDefault(h => h.Completion.IsFaulted);
        if (failed is not null)
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failed.Completion.Exception!.InnerException!);
        var results = handles.Select(h => h.Completion.Result).ToArray();
        var stats = scheduler.Stats;
        var sequences = results.Select(r => new GeneratedSequence(r.PromptTokens, r.GeneratedTokens, r.FinishReason)).ToArray();
        return new GenerationResult(sequences, (int)stats.PrefillTokens, stats.PrefillSeconds, (int)stats.DecodeTokens, stats.DecodeSeconds, (int)stats.DecodeSteps,
            stats.DecodeHostSeconds);
    }
}
