using ILGPU.Runtime;
using IlgpuLlama.Kernels;
using IlgpuLlama.Model;

namespace IlgpuLlama.Engine;

/// <summary>
/// The per-step inputs the forward pass reads from device memory, and what the device holds of
/// them: the decode rows (cache slot, position, token), each row's selection settings (1 /
/// temperature, repetition penalty) and a prefill chunk's tokens, positions, slots and last rows.
/// A recorded step reads everything that changes between replays from here. Each setter uploads
/// only what differs from what the device already holds: after a greedy step over the same rows the
/// chosen tokens and the advanced positions are already there, so nothing is uploaded. After a step
/// that failed part-way the device's state is unknown: <see cref="Invalidate"/> makes the next step
/// upload everything.
/// </summary>
sealed class DeviceInputs(AcceleratorStream stream, Workspace workspace, WorkspacePlan buf)
{
    // What the decode inputs on the device hold; Token -1 where the device's token is not known (or is
    // the -1 of a NaN row's argmax, which no real input equals either).
    DecodeRow[] rows = [];
    // What the selection inputs on the device hold; rows 0..selectRowsValid-1 are current.
    readonly float[] invTemperature = new float[buf.Shape.MaxBatch];
    readonly float[] penalty = new float[buf.Shape.MaxBatch];
    int selectRowsValid;

    /// <summary>
    /// Makes the device's decode slots and positions (and tokens when <paramref name="tokens"/>;
    /// prefill's selection does not read them) equal <paramref name="wanted"/>.
    /// </summary>
    public void SetRows(IReadOnlyList<DecodeRow> wanted, bool tokens)
    {
        int n = wanted.Count;
        bool sameRows = rows.Length == n;
        bool Differs(Func<DecodeRow, int> field) => !sameRows || Enumerable.Range(0, n).Any(i => field(wanted[i]) != field(rows[i]));
        if (Differs(r => r.Slot))
            Upload(workspace[buf.StepSlots], wanted.Select(r => r.Slot).ToArray());
        if (Differs(r => r.Position))
            Upload(workspace[buf.StepPositions], wanted.Select(r => r.Position).ToArray());
        if (tokens && Differs(r => r.Token))
            Upload(workspace[buf.StepTokens], wanted.Select(r => r.Token).ToArray());
        rows = tokens ? [.. wanted] : wanted.Select(r => r with { Token = -1 }).ToArray();
    }

    /// <summary>
    /// After a decode step over <paramref name="ran"/>: the step advanced every position on the
    /// device, and a greedy selection wrote <paramref name="greedyTokens"/> into the token inputs
    /// (null: the tokens are the ones the step read).
    /// </summary>
    public void StepDone(IReadOnlyList<DecodeRow> ran, IReadOnlyList<int>? greedyTokens) =>
        rows = ran.Select((r, i) => new DecodeRow(r.Slot, r.Position + 1, greedyTokens is null ? r.Token : greedyTokens[i])).ToArray();

    /// <summary>A greedy selection (after prefill) wrote <paramref name="tokens"/> into the token inputs of rows 0..n-1.</summary>
    public void TokensChosen(IReadOnlyList<int> tokens) =>
        rows = rows.Select((r, i) => i < tokens.Count ? r with { Token = tokens[i] } : r).ToArray();

    /// <summary>
    /// Makes the device's per-row selection inputs equal <paramref name="modes"/> (validated by the
    /// caller) and returns the step's shape, which is all a recorded step depends on.
    /// </summary>
    public SelectShape SetSelection(IReadOnlyList<SelectMode> modes)
    {
        int n = modes.Count;
        var wantedInvT = modes.Select(m => m.Greedy ? 1f : LogitsKernels.InverseTemperature(m.Temperature)).ToArray();
        var wantedPenalty = modes.Select(m => m.RepetitionPenalty).ToArray();
        bool Same(float[] held, float[] wanted) => n <= selectRowsValid && held.AsSpan(0, n).SequenceEqual(wanted);
        if (!Same(invTemperature, wantedInvT) || !Same(penalty, wantedPenalty))
        {
            Upload(workspace[buf.SelectInvTemperature].SubView(0, n), wantedInvT);
            Upload(workspace[buf.SelectPenalty].SubView(0, n), wantedPenalty);
            wantedInvT.CopyTo(invTemperature, 0);
            wantedPenalty.CopyTo(penalty, 0);
            selectRowsValid = Math.Max(selectRowsValid, n);
        }
        bool greedy = modes.All(m => m.Greedy);
        // Candidates round up to a power of two (at most the capacity): the shape keys recorded graphs,
        // so a client's top_k must not make a new one per value; a sampler reads only its own top-k + 1.
        int candidates = greedy ? 0 : Math.Min((int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)modes.Where(m => !m.Greedy).Max(m => m.Candidates)), buf.Shape.TopKCapacity);
        return new SelectShape(greedy, wantedPenalty.Any(v => v != 1f), candidates);
    }

    /// <summary>Forgets what the device holds, so the next step uploads all of its inputs (after a failed step).</summary>
    public void Invalidate()
    {
        rows = [];
        selectRowsValid = 0;
    }

    /// <summary>Uploads one prefill chunk's tokens, positions, slots and the row of each sequence's last token.</summary>
    public void SetPrefill(PrefillChunk chunk)
    {
        var lastRows = new int[buf.Shape.MaxBatch];
        foreach (var (seq, row) in chunk.Ends)
            lastRows[seq] = row;
        Upload(workspace[buf.PrefillTokens], chunk.Tokens);
        Upload(workspace[buf.PrefillPositions], chunk.Positions);
        Upload(workspace[buf.PrefillSlots], chunk.Slots);
        Upload(workspace[buf.LastRows], lastRows);
    }

    void Upload<T>(ILGPU.ArrayView<T> view, ReadOnlySpan<T> data)
        where T : unmanaged => HostCopy.Upload(stream, view, data);
}
