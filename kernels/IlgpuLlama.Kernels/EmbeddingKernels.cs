namespace IlgpuLlama.Kernels;

// Embedding gather: x[t, :] = fp32(table[tokens[t], :]).
// Decomposition: one thread per output element (implicitly grouped, grid = tokens * hidden).
// Consecutive threads read consecutive weights of one row (16-bit values, or a block format's quants
// with their block's scale), so loads coalesce. Token ids are
// validated on the host before upload (or come from argmax, which cannot leave the vocabulary).

/// <summary>Arguments of <see cref="EmbeddingKernels.Embedding{TW}"/>.</summary>
public struct EmbeddingArgs
{
    public ArrayView<ushort> Table; // [vocab, hidden] 16-bit (16-bit formats)
    public ArrayView<byte> Quants;  // [vocab, hidden / 32 x quant bytes] (block formats)
    public ArrayView<ushort> Scales; // [vocab, hidden / 32] fp16 (block formats)
    public ArrayView<int> Tokens;   // [count] token ids
    public ArrayView<float> X;      // [count, hidden] fp32 out
    public int Hidden;
}

/// <summary>Token embedding lookup.</summary>
public static class EmbeddingKernels
{
    /// <param name="index">flat index over [count, hidden]</param>
    /// <param name="a">the views and the row width</param>
    public static void Embedding<TW>(Index1D index, EmbeddingArgs a)
        where TW : struct, IWeightFormat
    {
        int hidden = a.Hidden;
        int t = index / hidden;
        int d = index - t * hidden;
        TW f = default;
        int row = a.Tokens[t];
        if (f.BlockWeights == 1)
        {
            a.X[index] = f.One(a.Table[row * hidden + d]);
            return;
        }
        if (f.BlockWeights == KQuants.SuperBlock)
        {
            a.X[index] = f.SuperWeight(a.Quants, a.Scales, row, hidden, d);
            return;
        }
        // Block formats: the weight's quant and its block's scale; the same values the matvecs read.
        int blocks = hidden / f.BlockWeights;
        int block = d / f.BlockWeights;
        int j = d - block * f.BlockWeights;
        float scale = Interop.IntAsFloat(a.Scales[row * blocks + block]);
        a.X[index] = f.Quant(a.Quants, row, hidden, d, block, j) * scale;
    }

    // ---- declaration, launcher, cost ------------------------------------------------------

    /// <summary>Family name (this file).</summary>
    public const string Family = "embedding";

    /// <summary><see cref="Embedding{TW}"/>, per weight format.</summary>
    public static KernelDefinition<EmbeddingArgs> EmbeddingKernel { get; } =
        KernelDefinition<EmbeddingArgs>.Implicit("embedding", Family, Embedding<Fp16Format.Device>, WeightFormat.All);

    /// <summary>x[t, :] = table[tokens[t], :] for <paramref name="count"/> tokens.</summary>
    public static void Embedding(this LlamaKernels k, WeightMatrix table, ArrayView<int> tokens, ArrayView<float> x, int count)
    {
        int hidden = table.Cols;
        table.Check("embedding");
        Require.Length(tokens, count, "embedding tokens");
        Require.Length(x, (long)count * hidden, "embedding output");
        var args = new EmbeddingArgs { Table = table.Values, Quants = table.Quants, Scales = table.Scales, Tokens = tokens, X = x, Hidden = hidden };
        k.Launch(EmbeddingKernel, EmbeddingKernel.Variant(table.Format), count * hidden, args);
    }

    /// <summary>Bytes moved for <paramref name="count"/> tokens: their table rows, the output and the ids.</summary>
    public static long BytesMoved(WeightFormat format, int count, int hidden) => count * (format.MatrixBytes(1, hidden) + 4L * hidden + 4);
}

/// <summary>The embedding family: its kernel (the benchmark cases: <c>EmbeddingBenchCases</c> in kernels/IlgpuLlama.Kernels.Bench).</summary>
sealed class EmbeddingFamily : KernelFamily
{
    public override string Name => EmbeddingKernels.Family;

    public override IReadOnlyList<IKernelDefinition> Kernels => [EmbeddingKernels.EmbeddingKernel];
}
