using ILGPU;
using ILGPU.Runtime;
using IlgpuLlama.Device;
using IlgpuLlama.Kernels;
using IlgpuLlama.Model;

namespace IlgpuLlama.Engine;

// The public steps of the model: prefill, decode, read-back, and decode steps replayed from
// recorded graphs. The forward pass they launch is in LlamaModel.cs.
public sealed partial class LlamaModel
{
    /// <summary>Waits for all queued work.</summary>
    public void Synchronize() => stream.Synchronize();

    // ---- prefill ------------------------------------------------------------------------------

    /// <summary>
    /// Runs prompts through the model, writing their keys and values into their cache slots, and
    /// selects each sequence's next token from its last token's logits (row i = sequence i).
    /// Prompts longer than the prefill workspace are processed in chunks.
    /// </summary>
    public StepResult Prefill(IReadOnlyList<SequenceInput> sequences, SelectMode mode) => Prefill(sequences, Uniform(mode, sequences.Count));

    /// <summary><see cref="Prefill(IReadOnlyList{SequenceInput}, SelectMode)"/> with a selection per sequence (one pass for all).</summary>
    public StepResult Prefill(IReadOnlyList<SequenceInput> sequences, IReadOnlyList<SelectMode> modes) => Prefill(sequences, modes, null, null);

    /// <summary>
    /// <see cref="Prefill(IReadOnlyList{SequenceInput}, IReadOnlyList{SelectMode})"/> that also hands the logits of every
    /// token of the sequences flagged in <paramref name="allLogits"/> to <paramref name="onLogits"/> (sequence index,
    /// position, row; row t predicts token t + 1), as <see cref="PrefillLogits"/> does, before selecting.
    /// Memory rule: the LM head over all positions runs per prefill chunk, at most max-batch rows at a
    /// time (the logits buffer's height), so it needs no device memory beyond the workspace; the host
    /// holds one max-batch x vocab fp32 block during the call. It costs one LM head per position.
    /// </summary>
    public StepResult Prefill(IReadOnlyList<SequenceInput> sequences, IReadOnlyList<SelectMode> modes, IReadOnlyList<bool>? allLogits,
        Action<int, int, ReadOnlySpan<float>>? onLogits)
    {
        ValidateInputs(sequences);
        CheckModes(modes, sequences.Count);
        if (allLogits is not null && (allLogits.Count != sequences.Count || onLogits is null))
            throw new EngineArgumentException($"{allLogits.Count} logits flags given for {sequences.Count} sequences; give one per sequence, and a callback");
        int h = Config.HiddenSize, n = sequences.Count;
        ResetSeen(sequences);
        float[]? host = allLogits?.Contains(true) == true ? new float[MaxBatch * Config.VocabSize] : null;
        foreach (var chunk in PrefillChunk.Plan(sequences, Plan.Shape.PrefillTokens))
        {
            RunPrefillChunk(chunk);
            if (host is not null)
            {
                // Each sequence's tokens are contiguous in a chunk.
                for (int start = 0; start < chunk.Count;)
                {
                    int seq = chunk.Sequences[start], end = start;
                    while (end < chunk.Count && chunk.Sequences[end] == seq)
                        end++;
                    if (allLogits![seq])
                        ChunkLogits(chunk, start, end - start, host, onLogits!);
                    start = end;
                }
            }
            foreach (var (seq, _) in chunk.Ends)
                Kernels.GatherRows(Workspace[buf.X], Workspace[buf.LastRows].SubView(seq, 1), Workspace[buf.LastHidden].SubView((long)seq * h, h), 1, h);
        }
        Norm(Workspace[buf.LastHidden], Weights.FinalNorm, Workspace[buf.Xb], n);
        LmHead(Workspace[buf.Xb], n, null, inputPadded: true);
        // Row i selects for sequence i: its slot (repetition-penalty flags) and the next decode inputs.
        var rows = sequences.Select(s => new DecodeRow(s.Slot, s.StartPosition + s.Tokens.Count, 0)).ToArray();
        try
        {
            inputs.SetRows(rows, tokens: false);
            return SelectAndRead(n, inputs.SetSelection(modes));
        }
        catch
        {
            inputs.Invalidate();
            throw;
        }
    }

    /// <summary>
    /// Runs prompts through the model like <see cref="Prefill(IReadOnlyList{SequenceInput}, SelectMode)"/> but hands the logits of every
    /// token to <paramref name="onLogits"/> (sequence index, position, row; row t predicts token
    /// t + 1) instead of selecting a next token.
    /// </summary>
    public void PrefillLogits(IReadOnlyList<SequenceInput> sequences, Action<int, int, ReadOnlySpan<float>> onLogits)
    {
        ValidateInputs(sequences);
        ResetSeen(sequences);
        var rows = new float[MaxBatch * Config.VocabSize];
        foreach (var chunk in PrefillChunk.Plan(sequences, Plan.Shape.PrefillTokens))
        {
            RunPrefillChunk(chunk);
            ChunkLogits(chunk, 0, chunk.Count, rows, onLogits);
        }
    }

    /// <summary>
    /// The logits of rows start..start+count-1 of the chunk just run (their residuals in act.x), handed
    /// to <paramref name="onLogits"/>: final norm into act.xb, then the LM head over at most max-batch
    /// rows at a time (the logits buffer's height), each block read back into <paramref name="host"/>.
    /// </summary>
    void ChunkLogits(PrefillChunk chunk, int start, int count, float[] host, Action<int, int, ReadOnlySpan<float>> onLogits)
    {
        int h = Config.HiddenSize, vocab = Config.VocabSize;
        Norm(Workspace[buf.X].SubView((long)start * h), Weights.FinalNorm, Workspace[buf.Xb], count);
        for (int r = 0; r < count; r += MaxBatch)
        {
            int rows = Math.Min(MaxBatch, count - r);
            LmHead(Workspace[buf.Xb].SubView((long)r * h), rows, null, inputPadded: false);
            var span = host.AsSpan(0, rows * vocab);
            Download(Workspace[buf.Logits], span);
            for (int i = 0; i < rows; i++)
                onLogits(chunk.Sequences[start + r + i], chunk.Positions[start + r + i], span.Slice(i * vocab, vocab));
        }
    }

    /// <summary>
    /// Gives cache slot <paramref name="to"/> the sequence <paramref name="tokens"/> that slot
    /// <paramref name="from"/> holds at positions 0..tokens.Count-1 without running the model: the
    /// keys and values of those positions are copied on the device (view to view on the stream, per
    /// layer and kv head: the cache is [slot, kv_heads, seq, head_dim]), and the slot's
    /// repetition-penalty flags are set to exactly those tokens. Slot <paramref name="from"/> may hold
    /// more positions (its own generated tokens); they are not copied. For the choices of one prompt
    /// (<see cref="Serving.Scheduler.SubmitGroup"/>): one prefill, n slots.
    /// </summary>
    public void CopySequence(int from, int to, IReadOnlyList<int> tokens)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        if (from < 0 || from >= MaxBatch || to < 0 || to >= MaxBatch || from == to)
            throw new EngineArgumentException($"cache slots {from} and {to} must be two different slots of 0..{MaxBatch - 1}");
        if (tokens.Count > MaxSeq)
            throw new EngineArgumentException($"{tokens.Count} positions exceed {EngineParameters.MaxSeqLen} {MaxSeq}", EngineParameter.MaxSeqLen);
        int kvHeads = Config.NumKeyValueHeads, hd = Config.HeadDim, vocab = Config.VocabSize;
        var layout = attention.Cache;
        long length = (long)tokens.Count * hd * layout.Words;
        var seen = new byte[vocab];
        foreach (int t in tokens)
        {
            CheckToken(t);
            seen[t] = 1;
        }
        if (length > 0)
            foreach (var cache in buf.KCache.Concat(buf.VCache))
            {
                var view = Workspace[cache];
                for (int head = 0; head < kvHeads; head++)
                    view.SubView((long)layout.Offset(from, head, 0, 0) * layout.Words, length).CopyTo(stream, view.SubView((long)layout.Offset(to, head, 0, 0) * layout.Words, length));
            }
        HostCopy.Upload(stream, Workspace[buf.Seen].SubView((long)to * vocab, vocab), seen);
    }

    void ResetSeen(IReadOnlyList<SequenceInput> sequences)
    {
        foreach (var s in sequences.Where(s => s.StartPosition == 0))
            Workspace[buf.Seen].SubView((long)s.Slot * Config.VocabSize, Config.VocabSize).MemSetToZero(stream);
    }

    /// <summary>Uploads one chunk's inputs and runs the prefill layers over them; the residual of every token is left in act.x.</summary>
    void RunPrefillChunk(PrefillChunk chunk)
    {
        inputs.SetPrefill(chunk);
        EnqueuePrefillLayers(chunk.Count);
    }

    void ValidateInputs(IReadOnlyList<SequenceInput> sequences)
    {
        if (sequences.Count == 0 || sequences.Count > MaxBatch)
            throw new EngineArgumentException($"{sequences.Count} sequences given; between 1 and {EngineParameters.MaxBatchSize} {MaxBatch} can run together", EngineParameter.MaxBatchSize);
        var seenSlots = new HashSet<int>();
        foreach (var s in sequences)
        {
            if (s.Slot < 0 || s.Slot >= MaxBatch || !seenSlots.Add(s.Slot))
                throw new EngineArgumentException($"cache slot {s.Slot} is invalid or used twice (slots are 0..{MaxBatch - 1})");
            if (s.Tokens.Count == 0)
                throw new EngineArgumentException("a prompt has no tokens; give at least one token");
            if (s.StartPosition < 0 || s.StartPosition + s.Tokens.Count > MaxSeq)
                throw new EngineArgumentException(
                    $"a prompt of {s.Tokens.Count} tokens starting at position {s.StartPosition} exceeds {EngineParameters.MaxSeqLen} {MaxSeq}; shorten it or raise {EngineParameters.MaxSeqLen}",
                    EngineParameter.MaxSeqLen);
            foreach (int tok in s.Tokens)
                CheckToken(tok);
        }
    }

    void CheckToken(int token)
    {
        if (token < 0 || token >= Config.VocabSize)
            throw new EngineArgumentException($"token id {token} is outside the vocabulary (0..{Config.VocabSize - 1})", EngineParameter.Tokens);
    }

    // ---- decode -------------------------------------------------------------------------------

    /// <summary>
    /// One decode step: row i feeds <paramref name="rows"/>[i].Token at its position through the
    /// model for the sequence in its cache slot, appends its K/V to the cache, and selects the
    /// next token. Only inputs that differ from what the device already holds are uploaded (after a
    /// greedy step the chosen tokens and advanced positions are already there). Replayed from a
    /// recorded graph when <see cref="UseGraphs"/>.
    /// </summary>
    public StepResult Decode(IReadOnlyList<DecodeRow> rows, SelectMode mode) => Decode(rows, Uniform(mode, rows.Count));

    /// <summary>
    /// <see cref="Decode(IReadOnlyList{DecodeRow}, SelectMode)"/> with a selection per row: one pass
    /// for all of them (each row's temperature and penalty are its own; greedy rows read their argmax).
    /// </summary>
    public StepResult Decode(IReadOnlyList<DecodeRow> rows, IReadOnlyList<SelectMode> modes)
    {
        long started = System.Diagnostics.Stopwatch.GetTimestamp();
        int b = rows.Count;
        if (b < 1 || b > MaxBatch)
            throw new EngineArgumentException($"decode batch {b} must be between 1 and {EngineParameters.MaxBatchSize} {MaxBatch}", EngineParameter.MaxBatchSize);
        CheckModes(modes, b);
        var slots = new HashSet<int>();
        foreach (var r in rows)
        {
            if (r.Slot < 0 || r.Slot >= MaxBatch || !slots.Add(r.Slot))
                throw new EngineArgumentException($"cache slot {r.Slot} is invalid or used twice (slots are 0..{MaxBatch - 1})");
            if (r.Position < 0 || r.Position >= MaxSeq)
                throw new EngineArgumentException(
                    $"decode position {r.Position} is outside the KV cache (max sequence length {MaxSeq}); raise {EngineParameters.MaxSeqLen}", EngineParameter.MaxSeqLen);
            CheckToken(r.Token);
        }
        try
        {
            inputs.SetRows(rows, tokens: true);
            var shape = inputs.SetSelection(modes);
            LaunchDecodeStep(b, shape);
            LastStepHostTime = System.Diagnostics.Stopwatch.GetElapsedTime(started);
            // The step advanced the positions on the device; greedy selection wrote the chosen tokens into the inputs.
            var result = ReadSelection(b, shape);
            inputs.StepDone(rows, shape.Greedy ? result.ArgMax : null);
            return result;
        }
        catch
        {
            inputs.Invalidate();
            throw;
        }
    }

    static SelectMode[] Uniform(SelectMode mode, int rows)
    {
        ArgumentNullException.ThrowIfNull(mode);
        return Enumerable.Repeat(mode, Math.Max(rows, 0)).ToArray();
    }

    void CheckModes(IReadOnlyList<SelectMode> modes, int rows)
    {
        ArgumentNullException.ThrowIfNull(modes);
        if (modes.Count != rows)
            throw new EngineArgumentException($"{modes.Count} selection modes given for {rows} rows; give one per row");
        foreach (var m in modes)
        {
            ArgumentNullException.ThrowIfNull(m, nameof(modes));
            if (!(m.RepetitionPenalty > 0) || !float.IsFinite(m.RepetitionPenalty))
                throw new EngineArgumentException($"repetition penalty {m.RepetitionPenalty} must be a finite number > 0 (1 = off)");
            if (!m.Greedy && (!(m.Temperature > 0) || !float.IsFinite(m.Temperature)))
                throw new EngineArgumentException($"temperature {m.Temperature} must be a finite number > 0 when sampling");
            if (!m.Greedy && (m.Candidates < 1 || m.Candidates > Plan.Shape.TopKCapacity))
                throw new EngineArgumentException($"{m.Candidates} sampling candidates must be between 1 and {Plan.Shape.TopKCapacity}");
        }
    }

    /// <summary>The logits of row <paramref name="row"/> of the most recent <see cref="Prefill(IReadOnlyList{SequenceInput}, SelectMode)"/> or <see cref="Decode(IReadOnlyList{DecodeRow}, SelectMode)"/> (after any repetition penalty).</summary>
    public void ReadLogitsRow(int row, Span<float> logits) => Download(Workspace[buf.Logits], logits[..Config.VocabSize], (long)row * Config.VocabSize);

    void LaunchDecodeStep(int batch, SelectShape shape)
    {
        if (!UseGraphs)
        {
            EnqueueDecodeStep(batch, shape);
            return;
        }
        ILaunchGraph graph;
        try
        {
            graph = graphs.GetOrRecord((batch, shape), () => LaunchGraphs.Record(stream, Kernels.RecordLaunches, () => EnqueueDecodeStep(batch, shape)));
        }
        catch (Exception e) when (Device.IsCuda && e is not ArgumentException)
        {
            // A driver that refuses the capture must not stop generation: launch directly from now on.
            UseGraphs = false;
            Warnings.Add(new($"CUDA graph capture failed ({e.Message}); decode kernels are launched one by one"));
            stream.Synchronize();
            EnqueueDecodeStep(batch, shape);
            return;
        }
        graph.Launch();
    }

    StepResult SelectAndRead(int rows, SelectShape shape)
    {
        EnqueueSelect(rows, shape);
        var result = ReadSelection(rows, shape);
        if (shape.Greedy)
            inputs.TokensChosen(result.ArgMax);
        return result;
    }

    /// <summary>Reads the selection of rows 0..rows-1 (the one read-back of a step; waits for the device).</summary>
    StepResult ReadSelection(int rows, SelectShape shape)
    {
        var act = Workspace;
        if (shape.Greedy)
            return new StepResult(shape, Download(act[buf.StepTokens], rows), null, null, null, null);
        int c = shape.Candidates;
        return new StepResult(shape, Download(act[buf.Argmax], rows), Download(act[buf.TopKVal], rows * c), Download(act[buf.TopKIdx], rows * c),
            Download(act[buf.MaxLogit], rows), Download(act[buf.SumExp], rows));
    }

    // ---- read-back ---------------------------------------------------------------------------

    T[] Download<T>(ArrayView<T> view, long count, long offset = 0)
        where T : unmanaged
    {
        var data = new T[count];
        Download(view, data, offset);
        return data;
    }

    void Download<T>(ArrayView<T> view, Span<T> data, long offset = 0)
        where T : unmanaged
    {
        HostCopy.Download(stream, view.SubView(offset, data.Length), data);
    }
}
