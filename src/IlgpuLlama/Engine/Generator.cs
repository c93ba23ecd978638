using System.Diagnostics;
using IlgpuLlama.Sampling;

namespace IlgpuLlama.Engine;

/// <summary>Why a sequence stopped.</summary>
public enum FinishReason
{
    /// <summary>It produced a stop token.</summary>
    Stop,

    /// <summary>It reached the new-token limit (prompt + new tokens are checked against the context up front).</summary>
    Length,
}

/// <summary>Options of one generation call.</summary>
public sealed record GenerationOptions
{
    /// <summary>New tokens per sequence at most.</summary>
    public int MaxNewTokens { get; init; } = 128;

    /// <summary>Sampling settings (greedy when temperature is 0).</summary>
    public SamplingOptions Sampling { get; init; } = SamplingOptions.Greedy;

    /// <summary>Token ids that end a sequence (the stop token is kept in the output).</summary>
    public IReadOnlyCollection<int> StopTokens { get; init; } = [];

    /// <summary>
    /// Positions already in each sequence's cache slot before its prompt (multi-turn chat continues
    /// a sequence); null: every prompt starts a new sequence at position 0.
    /// </summary>
    public IReadOnlyList<int>? StartPositions { get; init; }
}

/// <summary>One finished sequence.</summary>
public sealed record GeneratedSequence(IReadOnlyList<int> PromptTokens, IReadOnlyList<int> GeneratedTokens, FinishReason FinishReason);

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

/// <summary>
/// The generation loop: prefill all prompts together, then decode one token per live sequence
/// per step until each stops. A finished sequence leaves the batch (rows are compacted) while the
/// others go on. Greedy decoding keeps the token on the device (argmax feeds the next step);
/// sampling brings back only the top candidates, the max logit and the normaliser per sequence.
/// </summary>
public sealed class Generator(LlamaModel model)
{
    /// <summary>The model.</summary>
    public LlamaModel Model { get; } = model;

    /// <summary>Generates for up to max-batch prompts; <paramref name="onToken"/> sees each new token as it is chosen.</summary>
    public GenerationResult Generate(IReadOnlyList<IReadOnlyList<int>> prompts, GenerationOptions options, Action<int, int>? onToken = null)
    {
        int n = prompts.Count;
        if (n == 0 || n > Model.MaxBatch)
            throw new EngineArgumentException($"{n} prompts given; between 1 and {EngineParameters.MaxBatchSize} {Model.MaxBatch} can be generated together", EngineParameter.MaxBatchSize);
        if (options.MaxNewTokens < 1)
            throw new EngineArgumentException($"{EngineParameters.MaxNewTokens} {options.MaxNewTokens} must be at least 1", EngineParameter.MaxNewTokens);
        options.Sampling.Validate();
        var starts = options.StartPositions ?? new int[n];
        for (int i = 0; i < n; i++)
        {
            long need = (long)starts[i] + prompts[i].Count + options.MaxNewTokens; // 64-bit: MaxNewTokens near 2^31 wrapped negative and passed
            if (need > Model.MaxSeq)
                throw new EngineArgumentException(
                    $"prompt {i + 1}: {starts[i] + prompts[i].Count} tokens + {options.MaxNewTokens} new tokens = {need} exceeds {EngineParameters.MaxSeqLen} {Model.MaxSeq}; " +
                    $"shorten the prompt, lower {EngineParameters.MaxNewTokens} or raise {EngineParameters.MaxSeqLen}", EngineParameter.MaxSeqLen);
        }

        var sampling = options.Sampling;
        bool greedy = sampling.IsGreedy;
        int capacity = Model.Plan.Shape.TopKCapacity;
        // One candidate past top-k shows whether the k-th logit ties the next (transformers keeps such ties).
        int candidates = greedy ? 0 : sampling.TopK > 0 ? Math.Min(sampling.TopK + 1, capacity) : capacity;
        var mode = new SelectMode(greedy, greedy ? 1f : sampling.Temperature, sampling.RepetitionPenalty, candidates);
        var samplers = greedy ? null : Enumerable.Range(0, n).Select(i => new TokenSampler(sampling, i)).ToArray();
        var stops = new HashSet<int>(options.StopTokens);

        var generated = Enumerable.Range(0, n).Select(_ => new List<int>()).ToArray();
        var finish = new FinishReason?[n];
        var position = new int[n];      // position of each sequence's next input token
        var rowSeq = Enumerable.Range(0, n).ToArray(); // step row -> sequence (= slot)

        // Prefill every prompt; its selection gives each sequence's first token.
        var sw = Stopwatch.StartNew();
        var step = Model.Prefill(Enumerable.Range(0, n).Select(i => new SequenceInput(i, starts[i], prompts[i])).ToArray(), mode);
        for (int i = 0; i < n; i++)
            position[i] = starts[i] + prompts[i].Count;
        var next = new int[n];
        Choose(step, rowSeq, samplers, next);
        double prefillSeconds = sw.Elapsed.TotalSeconds;
        int live = Accept(n, rowSeq, next, generated, finish, position, stops, options, onToken);

        // Decode: one token per live sequence per step; finished sequences leave the batch.
        sw.Restart();
        int steps = 0, decodeTokens = 0;
        double hostSeconds = 0;
        while (live > 0)
        {
            rowSeq = Enumerable.Range(0, n).Where(i => finish[i] is null).ToArray();
            var rows = rowSeq.Select(i => new DecodeRow(i, position[i] - 1, generated[i][^1])).ToArray();
            step = Model.Decode(rows, mode);
            hostSeconds += Model.LastStepHostTime.TotalSeconds;
            steps++;
            Choose(step, rowSeq, samplers, next);
            decodeTokens += rows.Length;
            live = Accept(rows.Length, rowSeq, next, generated, finish, position, stops, options, onToken);
        }
        double decodeSeconds = sw.Elapsed.TotalSeconds;

        var sequences = Enumerable.Range(0, n).Select(i => new GeneratedSequence(prompts[i], generated[i], finish[i]!.Value)).ToArray();
        return new GenerationResult(sequences, prompts.Sum(p => p.Count), prefillSeconds, decodeTokens, decodeSeconds, steps, hostSeconds);
    }

    /// <summary>Picks the next token of every row of a step (the device argmax, or host sampling from the device's candidates).</summary>
    void Choose(StepResult step, int[] rowSeq, TokenSampler[]? samplers, int[] next)
    {
        float[]? full = null;
        for (int r = 0; r < step.Rows; r++)
        {
            if (step.ArgMax[r] < 0)
                throw new EngineStateException(
                    $"the logits of sequence {rowSeq[r] + 1} contain NaN; the weights or activations overflowed (try {EngineParameters.WeightFormat} bf16)", EngineParameter.WeightFormat);
            if (samplers is null)
            {
                next[r] = step.ArgMax[r];
                continue;
            }
            var sampler = samplers[rowSeq[r]];
            var result = sampler.Sample(step.Logits(r), step.Ids(r), step.MaxLogit![r], step.SumExp![r], Model.Config.VocabSize);
            if (result.NeedsFullLogits)
            {
                full ??= new float[Model.Config.VocabSize];
                Model.ReadLogitsRow(r, full);
                result = sampler.SampleFull(full);
            }
            next[r] = result.TokenId;
        }
    }

    /// <summary>Appends each row's token to its sequence and applies the stop rules; returns how many sequences are still live.</summary>
    static int Accept(int rows, int[] rowSeq, int[] next, List<int>[] generated, FinishReason?[] finish, int[] position, HashSet<int> stops,
        GenerationOptions options, Action<int, int>? onToken)
    {
        for (int r = 0; r < rows; r++)
        {
            int s = rowSeq[r];
            generated[s].Add(next[r]);
            position[s]++;
            onToken?.Invoke(s, next[r]);
            if (stops.Contains(next[r]))
                finish[s] = FinishReason.Stop;
            else if (generated[s].Count >= options.MaxNewTokens)
                finish[s] = FinishReason.Length;
        }
        return finish.Count(f => f is null);
    }
}
