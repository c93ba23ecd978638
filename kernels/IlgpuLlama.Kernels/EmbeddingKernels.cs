namespace IlgpuLlama.Kernels;

// Embedding gather: x[t, :] = fp32(table[tokens[t], :]).
// Decomposition: one thread per output element (implicitly grouped, grid = tokens * hidden).
// Consecutive threads read consecutive 16-bit weights of one row, so loads coalesce. Token ids are
// validated on the host before upload (or come from argmax, which cannot leave the vocabulary).

/// <summary>Token embedding lookup.</summary>
public static class EmbeddingKernels
{
    /// <param name="index">flat index over [count, hidden]</param>
    /// <param name="table">[vocab, hidden] 16-bit</param>
    /// <param name="tokens">[count] token ids</param>
    /// <param name="x">[count, hidden] fp32 out</param>
    public static void Embedding<TW>(Index1D index, ArrayView<ushort> table, ArrayView<int> tokens, ArrayView<float> x, int hidden)
        where TW : struct, IWeightFormat
    {
        int t = index / hidden;
        int d = index - t * hidden;
        TW f = default;
        x[index] = f.One(table[tokens[t] * hidden + d]);
    }

    /// <summary>Bytes moved for <paramref name="count"/> tokens.</summary>
    public static long BytesMoved(int count, int hidden) => count * (2L * hidden + 4L * hidden + 4);
}
