using System.Diagnostics;

namespace IlgpuLlama.Constraints;

/// <summary>Per-step cost of the structured-output mask over one vocabulary.</summary>
/// <param name="VocabSize">ids in the vocabulary (the logit row)</param>
/// <param name="Steps">masks timed</param>
/// <param name="MeanMilliseconds">mean time of one mask, applied to a logit row</param>
/// <param name="MedianMilliseconds">median time</param>
/// <param name="P99Milliseconds">99th percentile</param>
/// <param name="MeanAllowed">mean allowed tokens per step</param>
public sealed record MaskCost(int VocabSize, int Steps, double MeanMilliseconds, double MedianMilliseconds, double P99Milliseconds, double MeanAllowed)
{
    /// <summary>One line for a bench report.</summary>
    public override string ToString() =>
        FormattableString.Invariant($"json mask: {MeanMilliseconds:F3} ms/step mean, {MedianMilliseconds:F3} median, {P99Milliseconds:F3} p99 over {Steps} steps, vocabulary {VocabSize}, {MeanAllowed:F0} tokens allowed on average");
}

/// <summary>
/// Times the structured-output mask the way generation uses it (<see cref="JsonConstraint.Apply"/> on a
/// logit row, once per token) along random documents: each step takes a token uniformly among the
/// allowed ones, as a model with random weights would, and a finished document starts the next. Each
/// step's time is the fastest of <see cref="Repeats"/> runs of the same mask.
/// </summary>
public static class MaskBenchmark
{
    /// <summary>A schema with the common shapes (nested object, strings, numbers, enum, array) for <see cref="Run"/>.</summary>
    public const string DefaultSchema = """
        {"type":"object","properties":{
          "name":{"type":"string"},"age":{"type":"integer"},"score":{"type":"number"},
          "role":{"enum":["admin","user","guest"]},"active":{"type":"boolean"},
          "tags":{"type":"array","items":{"type":"string"}},
          "address":{"type":"object","properties":{"city":{"type":"string"},"zip":{"type":"string"}},"required":["city"]}},
         "required":["name","age","role","tags","address"],"additionalProperties":false}
        """;

    /// <summary>Runs of each step's mask; the fastest counts.</summary>
    public const int Repeats = 3;

    /// <summary>Times <paramref name="steps"/> masks (after a few untimed ones) over <paramref name="vocabulary"/>.</summary>
    /// <param name="vocabulary">the token bytes</param>
    /// <param name="grammar">the documents' grammar (null: <see cref="DefaultSchema"/>)</param>
    /// <param name="steps">masks timed</param>
    /// <param name="tokensPerDocument">the token limit of each document (the termination rule closes it)</param>
    /// <param name="seed">the random choices</param>
    public static MaskCost Run(TokenTrie vocabulary, JsonGrammar? grammar = null, int steps = 500, int tokensPerDocument = 128, int seed = 1)
    {
        ArgumentNullException.ThrowIfNull(vocabulary);
        ArgumentOutOfRangeException.ThrowIfLessThan(steps, 1);
        grammar ??= JsonGrammar.FromSchema(DefaultSchema);
        ArgumentOutOfRangeException.ThrowIfLessThan(tokensPerDocument, grammar.MinBytes);
        int end = vocabulary.VocabSize; // an end token just past the vocabulary: allowed when complete, never in the trie
        var random = new Random(seed);
        var row = new float[vocabulary.VocabSize + 1];
        var times = new double[steps];
        double allowedSum = 0;
        JsonConstraint? constraint = null;
        int used = 0;
        const int warmup = 20;
        for (int s = -warmup; s < steps; s++)
        {
            if (constraint is null || constraint.Ended || used == tokensPerDocument)
            {
                constraint = new JsonConstraint(grammar, vocabulary, [end]);
                used = 0;
            }
            // The fastest of a few runs of the same mask: other processes sharing the cores only add time.
            double ms = double.MaxValue;
            for (int repeat = 0; repeat < Repeats; repeat++)
            {
                Array.Clear(row);
                long start = Stopwatch.GetTimestamp();
                constraint.Apply(row, tokensPerDocument - used);
                ms = Math.Min(ms, Stopwatch.GetElapsedTime(start).TotalMilliseconds);
            }
            // The choice: uniform over the allowed tokens (0 logit) and the end token when allowed.
            int allowed = 0;
            for (int i = 0; i < vocabulary.VocabSize; i++)
                if (row[i] == 0)
                    allowed++;
            bool canEnd = constraint.IsComplete;
            int pick = random.Next(allowed + (canEnd ? 1 : 0));
            int token = end;
            for (int i = 0; i < vocabulary.VocabSize && pick >= 0; i++)
                if (row[i] == 0 && pick-- == 0)
                    token = i;
            if (token == end)
                constraint = null;
            else
            {
                constraint.Accept(token);
                used++;
            }
            if (s >= 0)
            {
                times[s] = ms;
                allowedSum += allowed;
            }
        }
        var sorted = times.Order().ToArray();
        return new MaskCost(vocabulary.VocabSize, steps, times.Average(), sorted[steps / 2], sorted[Math.Min(steps - 1, steps * 99 / 100)], allowedSum / steps);
    }
}
