
namespace IlgpuLlama.Engine;

/// <summary>Prompt tokens of one sequence to run through the model.</summary>
/// <param name="Slot">KV-cache slot (0..max batch - 1)</param>
/// <param name="StartPosition">position of the first token (0 starts a new sequence; more continues one, as chat does)</param>
/// <param name="Tokens">token ids</param>
public sealed record SequenceInput(int Slot, int StartPosition, IReadOnlyList<int> Tokens);

/// <summary>One row of a decode step: the sequence in cache slot <paramref name="Slot"/> takes <paramref name="Token"/> at <paramref name="Position"/>.</summary>
public readonly record struct DecodeRow(int Slot, int Position, int Token);

/// <summary>What the logits selection computes for one row (one sequence) at the end of a step.</summary>
/// <param name="Greedy">argmax only</param>
/// <param name="Temperature">softmax temperature for the normaliser (sampling; &gt; 0)</param>
/// <param name="RepetitionPenalty">&gt; 0; 1 = off</param>
/// <param name="Candidates">top-k candidates returned when sampling (1..the workspace's top-k capacity)</param>
public sealed record SelectMode(bool Greedy, float Temperature, float RepetitionPenalty, int Candidates)
{
    /// <summary>Plain argmax.</summary>
    public static SelectMode ArgMax { get; } = new(true, 1f, 1f, 0);
}

/// <summary>
/// The shape of one step's selection over all its rows: all a recorded step depends on. The rows'
/// temperatures and penalties are data in device memory, so a new temperature never records a graph.
/// </summary>
/// <param name="Greedy">every row takes its argmax, which stays on the device as the next step's input</param>
/// <param name="Penalty">the repetition-penalty kernel runs (rows whose penalty is 1 come out unchanged)</param>
/// <param name="Candidates">top-k candidates returned per row (0 when greedy): the largest any row asked for</param>
public readonly record struct SelectShape(bool Greedy, bool Penalty, int Candidates)
{
    /// <summary>Plain argmax, no penalty.</summary>
    public static SelectShape ArgMax => new(true, false, 0);
}

/// <summary>
/// The selection of one step for rows 0..<see cref="Rows"/>-1 (one per sequence of the call):
/// the argmax of every row (-1 where the logits hold a NaN), and when sampling the top
/// candidates, the max logit and the softmax normaliser the host sampler needs.
/// </summary>
public sealed class StepResult
{
    internal StepResult(SelectShape shape, int[] argmax, float[]? values, int[]? ids, float[]? maxLogit, float[]? sumExp)
    {
        Shape = shape;
        ArgMax = argmax;
        CandidateLogits = values;
        CandidateIds = ids;
        MaxLogit = maxLogit;
        SumExp = sumExp;
    }

    /// <summary>The selection that ran (its candidates per row).</summary>
    public SelectShape Shape { get; }

    /// <summary>Rows of the step.</summary>
    public int Rows => ArgMax.Count;

    /// <summary>Argmax token of each row, -1 where the row's logits contain NaN.</summary>
    public IReadOnlyList<int> ArgMax { get; }

    /// <summary>[rows, candidates] largest logits, descending (sampling only).</summary>
    public float[]? CandidateLogits { get; }

    /// <summary>[rows, candidates] their token ids (sampling only).</summary>
    public int[]? CandidateIds { get; }

    /// <summary>[rows] largest logit (sampling only).</summary>
    public float[]? MaxLogit { get; }

    /// <summary>[rows] sum of exp((l - max) / T) over the vocabulary at each row's temperature (sampling only).</summary>
    public float[]? SumExp { get; }

    /// <summary>Candidate logits of row <paramref name="row"/>.</summary>
    public ReadOnlySpan<float> Logits(int row) => CandidateLogits.AsSpan(row * Shape.Candidates, Shape.Candidates);

    /// <summary>Candidate ids of row <paramref name="row"/>.</summary>
    public ReadOnlySpan<int> Ids(int row) => CandidateIds.AsSpan(row * Shape.Candidates, Shape.Candidates);

    /// <summary>Row <paramref name="row"/> alone, as a one-row result (a copy).</summary>
    internal StepResult Row(int row) => new(Shape, [ArgMax[row]], CandidateLogits is null ? null : Logits(row).ToArray(), CandidateIds is null ? null : Ids(row).ToArray(),
        MaxLogit is null ? null : [MaxLogit[row]], SumExp is null ? null : [SumExp[row]]);
}

/// <summary>One prefill pass: up to T prompt tokens of one or more sequences, flattened.</summary>
/// <param name="Tokens">input tokens</param>
/// <param name="Positions">position of each token in its sequence</param>
/// <param name="Slots">cache slot of each token</param>
/// <param name="Sequences">index of each token's sequence in the call</param>
/// <param name="Ends">(sequence, row) of every sequence whose last prompt token is in this pass</param>
public sealed record PrefillChunk(int[] Tokens, int[] Positions, int[] Slots, int[] Sequences, IReadOnlyList<(int Sequence, int Row)> Ends)
{
    /// <summary>Tokens in the pass.</summary>
    public int Count => Tokens.Length;

    /// <summary>
    /// Cuts sequences into passes of at most <paramref name="capacity"/> tokens: the sequences are
    /// concatenated in order and the stream is cut every <paramref name="capacity"/> tokens, so a
    /// long prompt spans passes and short ones share one.
    /// </summary>
    public static IReadOnlyList<PrefillChunk> Plan(IReadOnlyList<SequenceInput> sequences, int capacity)
    {
        var flat = sequences.SelectMany((s, i) => s.Tokens.Select((tok, j) => (Seq: i, s.Slot, Pos: s.StartPosition + j, Tok: tok, Last: j == s.Tokens.Count - 1))).ToList();
        var chunks = new List<PrefillChunk>();
        for (int start = 0; start < flat.Count; start += capacity)
        {
            var part = flat.GetRange(start, Math.Min(capacity, flat.Count - start));
            var ends = part.Select((f, r) => (f, r)).Where(x => x.f.Last).Select(x => (x.f.Seq, x.r)).ToArray();
            chunks.Add(new PrefillChunk(part.Select(f => f.Tok).ToArray(), part.Select(f => f.Pos).ToArray(), part.Select(f => f.Slot).ToArray(),
                part.Select(f => f.Seq).ToArray(), ends));
        }
        return chunks;
    }
}
