namespace IlgpuLlama.Kernels;

// Decode matmul: y[b, r] = sum_k W[r, k] * x[b, k] for up to four activation vectors per launch
// (a decode step of more sequences launches tiles of four; WorkspaceShape pads the batch).
//
// Weights are row-major [rows, in] in any WeightFormat, read as 128-bit chunks (U4: 8 fp16/bf16
// weights, 16 Q8_0 quants or 32 Q4_0 nibbles, the block formats' fp16 scales from their own plane).
// Every weight byte is read exactly once per launch for its up to four vectors; x (fp32,
// [batch, in]) is re-read from L1/L2 by every group, which is cheap because it is small.
//
// Decomposition (all versions): one group computes two output rows. Its threads stride over the
// in/8 chunks of both rows (consecutive threads read consecutive 16-byte chunks, so each warp load
// is a fully coalesced 512-byte transaction per row), four chunks per row in flight per iteration.
// Groups are small (in/32 threads: 64 at hidden 2048, 256 for the 8192-wide down projection) so
// that many independent groups share an SM and their loads overlap each other's reductions.
// Partial sums (2 rows x batch) are reduced with warp shuffles, then across warps through shared
// memory. Launch: grid = number of row pairs, group = in/32 threads, 32..256 (whole warps).
//
// Versions kept (all share DotRowPair):
//   MatVec        y = W x  or  y += W x (residual fused)          grid = ceil(rows / 2)
//   MatVecSwiGlu  h = silu(Wg x) * (Wu x)                          grid = intermediate
//   MatVecQkvRope q = rope(Wq x); cache_k[pos] = fp16(rope(Wk x)); grid = (q_dim + 2 kv_dim) / 2
//                 cache_v[pos] = fp16(Wv x); a group owns the rotate_half pair (i, i + head_dim/2)
// Each also exists with the RMSNorm of its input fused (MatVecNorm, MatVecSwiGluNorm,
// MatVecQkvRopeNorm): x is the raw residual, the group sums x^2 in the pass over x it already makes
// (every group covers the whole input), multiplies each widened weight chunk by the widened norm
// weight g once (W (g * x) = (W * g) x, so the product does not depend on the batch), and scales its
// outputs by 1/rms in the epilogue: W (g * x / rms) = (W (g * x)) / rms. That removes the RMSNorm
// launches (and their round trip through act.xb) from decode.

/// <summary>Shape of a plain decode matmul.</summary>
public struct MatVecShape
{
    /// <summary>Output rows (W's first dimension).</summary>
    public int Rows;
    /// <summary>Input length / 8: the number of 128-bit chunks per weight row.</summary>
    public int K8;
    /// <summary>Distance between consecutive batch rows of y (usually Rows).</summary>
    public int YStride;
    /// <summary>1: y += W x (fused residual add); 0: y = W x.</summary>
    public int Accumulate;
    /// <summary>Batch tiles of the kernel's width one launch runs over, re-using each group's weight rows from cache.</summary>
    public int Tiles;
    /// <summary>Valid batch rows (the last tile may be partial: its extra rows are read, never written).</summary>
    public int Batch;
}

/// <summary>The RMSNorm fused into a matvec's input (unused by the plain versions).</summary>
public struct InputNorm
{
    public ArrayView<U4> Weight; // [in / 8] 16-bit norm weight g, 8 per chunk
    public float Eps;
}

/// <summary>Arguments of <see cref="MatVecKernels.MatVec{TW, TB}"/> and <see cref="MatVecKernels.MatVecNorm{TW, TB}"/>.</summary>
public struct MatVecArgs
{
    public ArrayView<U4> W;     // [rows, chunks] weight chunks of the format (8, 16 or 32 weights each)
    public ArrayView<ushort> Scales; // [rows, in / 32] fp16 block scales (block formats only)
    public ArrayView<F4> X;     // [batch, k8 * 2] fp32 (raw residual for the normed version)
    public ArrayView<float> Y;  // [batch, y_stride] fp32
    public MatVecShape Shape;
    public InputNorm Norm;
}

/// <summary>Arguments of <see cref="MatVecKernels.MatVecSwiGlu{TW, TB}"/>.</summary>
public struct MatVecSwiGluArgs
{
    public ArrayView<U4> Gate;  // [inter, chunks]
    public ArrayView<U4> Up;    // [inter, chunks]
    public ArrayView<ushort> GateScales; // [inter, in / 32] (block formats only)
    public ArrayView<ushort> UpScales;
    public ArrayView<F4> X;     // [batch, k8 * 2] fp32
    public ArrayView<float> H;  // [batch, inter] fp32 out
    public MatVecShape Shape;
    public InputNorm Norm;
}

/// <summary>Arguments of the fused q/k/v projection with RoPE and KV-cache append.</summary>
public struct QkvRopeArgs
{
    public ArrayView<U4> Wq;          // [q_dim, chunks] weight chunks
    public ArrayView<U4> Wk;          // [kv_dim, chunks]
    public ArrayView<U4> Wv;          // [kv_dim, chunks]
    public ArrayView<ushort> QScales; // [q_dim, hidden / 32] (block formats only)
    public ArrayView<ushort> KScales;
    public ArrayView<ushort> VScales;
    public ArrayView<F4> X;           // [batch, hidden] fp32 (normed)
    public ArrayView<float> Q;        // [batch, q_dim] fp32 out, rotated
    public ArrayView<ushort> KCache;  // this layer's K cache (KvCacheLayout)
    public ArrayView<ushort> VCache;  // same layout
    public ArrayView<float> Rope;     // [max_seq, head_dim/2, 2] (cos, sin)
    public ArrayView<int> Slots;      // [batch] cache slot of each sequence
    public ArrayView<int> Positions;  // [batch] position of this step's token
    public KvCacheLayout Cache;
    public int K8, QDim, KvDim;
    public int Tiles, Batch;          // batch tiles of the kernel's width and valid rows, as in MatVecShape
    public int FirstPair;             // the pair group 0 computes: 0, or (q_dim + kv_dim) / 2 for a launch of v alone
    public InputNorm Norm;
}

/// <summary>The three projections of the fused q/k/v launch.</summary>
public readonly record struct QkvWeights(WeightMatrix Q, WeightMatrix K, WeightMatrix V);

/// <summary>An RMSNorm folded into a matvec's input: the norm's weight and epsilon.</summary>
public readonly record struct FusedNorm(WeightVector Weight, float Eps);

/// <summary>
/// Whether a matvec normalises its input (RMSNorm fused): a compile-time constant, like the batch
/// width, so the plain versions carry no code or registers for it.
/// </summary>
public interface IInputNorm
{
    /// <summary>True when the input is RMS-normalised on the fly.</summary>
    bool Enabled { get; }
}

/// <summary>The input is used as it is.</summary>
public struct PlainInput : IInputNorm
{
    public readonly bool Enabled => false;
}

/// <summary>The input is RMS-normalised and scaled by the norm weight on the fly.</summary>
public struct RmsNormedInput : IInputNorm
{
    public readonly bool Enabled => true;
}

/// <summary>Eight partial sums (rows A and B for batch entries 0..3) and, with a fused norm, each input's sum of squares.</summary>
public struct Acc8
{
    public float A0, A1, A2, A3, B0, B1, B2, B3;
    public float S0, S1, S2, S3;

    public readonly float A(int b) => b == 0 ? A0 : b == 1 ? A1 : b == 2 ? A2 : A3;
    public readonly float B(int b) => b == 0 ? B0 : b == 1 ? B1 : b == 2 ? B2 : B3;
    public readonly float S(int b) => b == 0 ? S0 : b == 1 ? S1 : b == 2 ? S2 : S3;
}

/// <summary>Eight widened weights.</summary>
public struct W8
{
    public float V0, V1, V2, V3, V4, V5, V6, V7;

    public readonly float Dot(F4 a, F4 b)
    {
        float s = V0 * a.X;
        s += V1 * a.Y;
        s += V2 * a.Z;
        s += V3 * a.W;
        s += V4 * b.X;
        s += V5 * b.Y;
        s += V6 * b.Z;
        s += V7 * b.W;
        return s;
    }

    /// <summary>Element-wise product with <paramref name="g"/>.</summary>
    public readonly W8 Times(W8 g)
    {
        W8 r;
        r.V0 = V0 * g.V0;
        r.V1 = V1 * g.V1;
        r.V2 = V2 * g.V2;
        r.V3 = V3 * g.V3;
        r.V4 = V4 * g.V4;
        r.V5 = V5 * g.V5;
        r.V6 = V6 * g.V6;
        r.V7 = V7 * g.V7;
        return r;
    }

    /// <summary>Sum of squares of eight fp32 values.</summary>
    public static float SumSquares(F4 a, F4 b)
    {
        float s = a.X * a.X;
        s += a.Y * a.Y;
        s += a.Z * a.Z;
        s += a.W * a.W;
        s += b.X * b.X;
        s += b.Y * b.Y;
        s += b.Z * b.Z;
        s += b.W * b.W;
        return s;
    }
}

/// <summary>Decode matmul kernels (GEMV over up to four vectors). See the file header.</summary>
public static class MatVecKernels
{
    /// <summary>Output rows per group in <see cref="MatVec{TW, TB}"/>.</summary>
    public const int RowsPerGroup = 2;

    /// <summary>Largest number of warps in a group (sizes the static shared scratch).</summary>
    public const int MaxWarps = 64;

    /// <summary>Widens a 128-bit chunk of eight 16-bit weights once, for use against every batch vector.</summary>
    public static W8 Widen<TW>(U4 w)
        where TW : struct, IWeightFormat
    {
        TW f = default;
        W8 r;
        r.V0 = f.Low(w.X);
        r.V1 = f.High(w.X);
        r.V2 = f.Low(w.Y);
        r.V3 = f.High(w.Y);
        r.V4 = f.Low(w.Z);
        r.V5 = f.High(w.Z);
        r.V6 = f.Low(w.W);
        r.V7 = f.High(w.W);
        return r;
    }

    /// <summary>Chunks of a row of <paramref name="k8"/> x 8 weights in format <typeparamref name="TW"/>.</summary>
    public static int ChunksPerRow<TW>(int k8)
        where TW : struct, IWeightFormat => k8 * 8 / default(TW).ChunkWeights;

    /// <summary>
    /// The side words of one row of a block format, in / BlockWeights x SideWords of them (the view
    /// unchanged for 16-bit formats, which have none); written as k8 / (BlockWeights / 8) so that it
    /// folds to the same shift for every block format.
    /// </summary>
    static ArrayView<ushort> ScalesRow<TW>(ArrayView<ushort> scales, int row, int k8)
        where TW : struct, IWeightFormat =>
        default(TW).BlockWeights == 1 ? scales : scales.SubView(row * (k8 / (default(TW).BlockWeights / 8)) * default(TW).SideWords, k8 / (default(TW).BlockWeights / 8) * default(TW).SideWords);

    /// <summary>
    /// Chunk <paramref name="c"/> of rows A and B dotted with every batch vector, added to
    /// <paramref name="acc"/>: 16-bit formats widened with the format's Low/High, block formats
    /// dequantised by the format's own <see cref="IWeightFormat.BlockChunk"/> and scaled here.
    /// </summary>
    static Acc8 AccumulateChunk<TW, TN>(Acc8 acc, U4 wa, U4 wb, ArrayView<ushort> scalesA, ArrayView<ushort> scalesB, ArrayView<U4> g, int c,
        ArrayView<F4> x, int k4, int batch)
        where TW : struct, IWeightFormat
        where TN : struct, IInputNorm
    {
        int cw = default(TW).ChunkWeights;
        if (default(TW).BlockWeights == 1)
            return Accumulate16<TW, TN>(acc, wa, wb, g, c, x, k4, batch);
        // K-quants: each chunk spans sub-blocks with their own scales (and mins), which the format applies.
        if (default(TW).BlockWeights == KQuants.SuperBlock)
            return default(TW).SuperChunk<TN>(acc, wa, wb, scalesA, scalesB, g, c, x, k4, batch);
        // Block formats: the chunk's dot products in quant units, scaled by each row's block scale.
        int scale = c * cw / default(TW).BlockWeights;
        float sa = Interop.IntAsFloat(scalesA[scale]);
        float sb = Interop.IntAsFloat(scalesB[scale]);
        Acc8 p = default(TW).BlockChunk<TN>(default, wa, wb, g, c, x, k4, batch);
        acc.A0 += sa * p.A0;
        acc.B0 += sb * p.B0;
        acc.S0 += p.S0;
        if (batch > 1)
        {
            acc.A1 += sa * p.A1;
            acc.B1 += sb * p.B1;
            acc.S1 += p.S1;
        }
        if (batch > 2)
        {
            acc.A2 += sa * p.A2;
            acc.B2 += sb * p.B2;
            acc.S2 += p.S2;
        }
        if (batch > 3)
        {
            acc.A3 += sa * p.A3;
            acc.B3 += sb * p.B3;
            acc.S3 += p.S3;
        }
        return acc;
    }

    /// <summary>Four norm weights (16-bit, the model's vector format) starting at weight index <paramref name="i"/> (a multiple of 4).</summary>
    static F4 NormQuad<TW>(ArrayView<U4> g, int i)
        where TW : struct, IWeightFormat
    {
        TW f = default;
        U4 v = g[i / 8];
        bool upper = (i & 4) != 0;
        uint p0 = upper ? v.Z : v.X;
        uint p1 = upper ? v.W : v.Y;
        F4 r;
        r.X = f.Norm((ushort)(p0 & 0xFFFFu));
        r.Y = f.Norm((ushort)(p0 >> 16));
        r.Z = f.Norm((ushort)(p1 & 0xFFFFu));
        r.W = f.Norm((ushort)(p1 >> 16));
        return r;
    }

    static float Dot4(F4 a, F4 b)
    {
        float s = a.X * b.X;
        s += a.Y * b.Y;
        s += a.Z * b.Z;
        s += a.W * b.W;
        return s;
    }

    static F4 Times(F4 a, F4 b)
    {
        F4 r;
        r.X = a.X * b.X;
        r.Y = a.Y * b.Y;
        r.Z = a.Z * b.Z;
        r.W = a.W * b.W;
        return r;
    }

    /// <summary>Four weights of rows A and B (in quant units) against x's F4 <paramref name="xi"/> of every batch vector.</summary>
    public static Acc8 Quad<TW, TN>(Acc8 p, F4 wa, F4 wb, ArrayView<U4> g, int weight, ArrayView<F4> x, int xi, int k4, int batch)
        where TW : struct, IWeightFormat
        where TN : struct, IInputNorm
    {
        bool norm = default(TN).Enabled;
        if (norm)
        {
            F4 gq = NormQuad<TW>(g, weight);
            wa = Times(wa, gq);
            wb = Times(wb, gq);
        }
        F4 x0 = x[xi];
        p.A0 += Dot4(wa, x0);
        p.B0 += Dot4(wb, x0);
        if (norm)
            p.S0 += Dot4(x0, x0);
        if (batch > 1)
        {
            x0 = x[k4 + xi];
            p.A1 += Dot4(wa, x0);
            p.B1 += Dot4(wb, x0);
            if (norm)
                p.S1 += Dot4(x0, x0);
        }
        if (batch > 2)
        {
            x0 = x[2 * k4 + xi];
            p.A2 += Dot4(wa, x0);
            p.B2 += Dot4(wb, x0);
            if (norm)
                p.S2 += Dot4(x0, x0);
        }
        if (batch > 3)
        {
            x0 = x[3 * k4 + xi];
            p.A3 += Dot4(wa, x0);
            p.B3 += Dot4(wb, x0);
            if (norm)
                p.S3 += Dot4(x0, x0);
        }
        return p;
    }

    static Acc8 Accumulate16<TW, TN>(Acc8 acc, U4 wa, U4 wb, ArrayView<U4> g, int c, ArrayView<F4> x, int k4, int batch)
        where TW : struct, IWeightFormat
        where TN : struct, IInputNorm
    {
        bool norm = default(TN).Enabled;
        W8 a = Widen<TW>(wa);
        W8 b = Widen<TW>(wb);
        if (norm)
        {
            // W (g * x) = (W * g) x: scale the chunk once, not each batch vector.
            W8 gw = Widen<TW>(g[c]);
            a = a.Times(gw);
            b = b.Times(gw);
        }
        int xOffset = 2 * c;
        F4 x0 = x[xOffset];
        F4 x1 = x[xOffset + 1];
        acc.A0 += a.Dot(x0, x1);
        acc.B0 += b.Dot(x0, x1);
        if (norm)
            acc.S0 += W8.SumSquares(x0, x1);
        if (batch > 1)
        {
            x0 = x[k4 + xOffset];
            x1 = x[k4 + xOffset + 1];
            acc.A1 += a.Dot(x0, x1);
            acc.B1 += b.Dot(x0, x1);
            if (norm)
                acc.S1 += W8.SumSquares(x0, x1);
        }
        if (batch > 2)
        {
            x0 = x[2 * k4 + xOffset];
            x1 = x[2 * k4 + xOffset + 1];
            acc.A2 += a.Dot(x0, x1);
            acc.B2 += b.Dot(x0, x1);
            if (norm)
                acc.S2 += W8.SumSquares(x0, x1);
        }
        if (batch > 3)
        {
            x0 = x[3 * k4 + xOffset];
            x1 = x[3 * k4 + xOffset + 1];
            acc.A3 += a.Dot(x0, x1);
            acc.B3 += b.Dot(x0, x1);
            if (norm)
                acc.S3 += W8.SumSquares(x0, x1);
        }
        return acc;
    }

    /// <summary>
    /// Dot products of two weight rows with every batch vector, reduced over the whole group.
    /// Every thread of the group returns the totals. Must be called by all threads of the group.
    /// </summary>
    /// <param name="rowA">row A, k8 chunks</param>
    /// <param name="rowB">row B, k8 chunks</param>
    /// <param name="x">[batch, k8 * 2] F4</param>
    /// <param name="scalesA">row A's block scales (block formats)</param>
    /// <param name="scalesB">row B's block scales (block formats)</param>
    /// <param name="g">[k8] the fused norm's weight (read only when <typeparamref name="TN"/> is enabled)</param>
    /// <param name="k8">the row's input length / 8</param>
    public static Acc8 DotRowPair<TW, TN>(ArrayView<U4> rowA, ArrayView<U4> rowB, ArrayView<ushort> scalesA, ArrayView<ushort> scalesB, ArrayView<F4> x, ArrayView<U4> g,
        int k8, int batch)
        where TW : struct, IWeightFormat
        where TN : struct, IInputNorm
    {
        int stride = Group.DimX;
        int k4 = k8 * 2;
        int chunks = ChunksPerRow<TW>(k8);
        Acc8 acc = default;

        int c = Group.IdxX;
        int inFlight = default(TW).ChunksInFlight;
        if (inFlight == 4)
        {
            // Four chunks per row in flight (16-bit formats): all eight 128-bit loads are issued before the first use,
            // so each thread keeps 128 bytes of weights moving (the loop body is unrolled by hand:
            // ILGPU 1.5 does not unroll). Shorter tails take two chunks, then one.
            for (; c + 3 * stride < chunks; c += 4 * stride)
            {
                int c1 = c + stride;
                int c2 = c1 + stride;
                int c3 = c2 + stride;
                U4 wa0 = rowA[c];
                U4 wb0 = rowB[c];
                U4 wa1 = rowA[c1];
                U4 wb1 = rowB[c1];
                U4 wa2 = rowA[c2];
                U4 wb2 = rowB[c2];
                U4 wa3 = rowA[c3];
                U4 wb3 = rowB[c3];
                acc = AccumulateChunk<TW, TN>(acc, wa0, wb0, scalesA, scalesB, g, c, x, k4, batch);
                acc = AccumulateChunk<TW, TN>(acc, wa1, wb1, scalesA, scalesB, g, c1, x, k4, batch);
                acc = AccumulateChunk<TW, TN>(acc, wa2, wb2, scalesA, scalesB, g, c2, x, k4, batch);
                acc = AccumulateChunk<TW, TN>(acc, wa3, wb3, scalesA, scalesB, g, c3, x, k4, batch);
            }
            if (c + stride < chunks)
            {
                int c1 = c + stride;
                U4 wa0 = rowA[c];
                U4 wb0 = rowB[c];
                U4 wa1 = rowA[c1];
                U4 wb1 = rowB[c1];
                acc = AccumulateChunk<TW, TN>(acc, wa0, wb0, scalesA, scalesB, g, c, x, k4, batch);
                acc = AccumulateChunk<TW, TN>(acc, wa1, wb1, scalesA, scalesB, g, c1, x, k4, batch);
                c += 2 * stride;
            }
            if (c < chunks)
                acc = AccumulateChunk<TW, TN>(acc, rowA[c], rowB[c], scalesA, scalesB, g, c, x, k4, batch);
        }
        else if (inFlight == 2)
        {
            // Two chunks per row in flight (Q8_0: a chunk is twice an fp16 chunk's weights, so two keep
            // as many weights moving per thread as four fp16 chunks do, with half the bytes).
            for (; c + stride < chunks; c += 2 * stride)
            {
                int c1 = c + stride;
                U4 wa0 = rowA[c];
                U4 wb0 = rowB[c];
                U4 wa1 = rowA[c1];
                U4 wb1 = rowB[c1];
                acc = AccumulateChunk<TW, TN>(acc, wa0, wb0, scalesA, scalesB, g, c, x, k4, batch);
                acc = AccumulateChunk<TW, TN>(acc, wa1, wb1, scalesA, scalesB, g, c1, x, k4, batch);
            }
            if (c < chunks)
                acc = AccumulateChunk<TW, TN>(acc, rowA[c], rowB[c], scalesA, scalesB, g, c, x, k4, batch);
        }
        else
        {
            // One chunk per row at a time (Q4_0: a chunk is a whole block of 32 weights; one keeps the
            // dequantised values and the batch's inputs in registers without spilling).
            for (; c < chunks; c += stride)
                acc = AccumulateChunk<TW, TN>(acc, rowA[c], rowB[c], scalesA, scalesB, g, c, x, k4, batch);
        }

        acc.A0 = DeviceMath.WarpSum(acc.A0);
        acc.B0 = DeviceMath.WarpSum(acc.B0);
        if (batch > 1)
        {
            acc.A1 = DeviceMath.WarpSum(acc.A1);
            acc.B1 = DeviceMath.WarpSum(acc.B1);
        }
        if (batch > 2)
        {
            acc.A2 = DeviceMath.WarpSum(acc.A2);
            acc.B2 = DeviceMath.WarpSum(acc.B2);
        }
        if (batch > 3)
        {
            acc.A3 = DeviceMath.WarpSum(acc.A3);
            acc.B3 = DeviceMath.WarpSum(acc.B3);
        }

        int warps = Group.DimX / Warp.WarpSize;
        if (default(TN).Enabled)
            acc = ReduceSumsOfSquares(acc, batch, warps);
        if (warps == 1)
            return acc;

        // Allocated only where it is used: on the CPU accelerator every group's allocation is a
        // host allocation, and a group of one warp needs no scratch.
        var scratch = SharedMemory.Allocate<float>(MaxWarps * 8);
        if (Warp.IsFirstLane)
        {
            int o = Warp.WarpIdx * 8;
            scratch[o] = acc.A0;
            scratch[o + 1] = acc.A1;
            scratch[o + 2] = acc.A2;
            scratch[o + 3] = acc.A3;
            scratch[o + 4] = acc.B0;
            scratch[o + 5] = acc.B1;
            scratch[o + 6] = acc.B2;
            scratch[o + 7] = acc.B3;
        }
        Group.Barrier();
        Acc8 total = default;
        for (int w = 0; w < warps; w++)
        {
            int o = w * 8;
            total.A0 += scratch[o];
            total.A1 += scratch[o + 1];
            total.A2 += scratch[o + 2];
            total.A3 += scratch[o + 3];
            total.B0 += scratch[o + 4];
            total.B1 += scratch[o + 5];
            total.B2 += scratch[o + 6];
            total.B3 += scratch[o + 7];
        }
        total.S0 = acc.S0;
        total.S1 = acc.S1;
        total.S2 = acc.S2;
        total.S3 = acc.S3;
        return total;
    }

    /// <summary>Group-wide sums of squares of the fused norm's inputs (every thread gets them); only the normed versions call it.</summary>
    static Acc8 ReduceSumsOfSquares(Acc8 acc, int batch, int warps)
    {
        acc.S0 = DeviceMath.WarpSum(acc.S0);
        if (batch > 1)
            acc.S1 = DeviceMath.WarpSum(acc.S1);
        if (batch > 2)
            acc.S2 = DeviceMath.WarpSum(acc.S2);
        if (batch > 3)
            acc.S3 = DeviceMath.WarpSum(acc.S3);
        if (warps == 1)
            return acc;
        var scratch = SharedMemory.Allocate<float>(MaxWarps * 4);
        if (Warp.IsFirstLane)
        {
            int o = Warp.WarpIdx * 4;
            scratch[o] = acc.S0;
            scratch[o + 1] = acc.S1;
            scratch[o + 2] = acc.S2;
            scratch[o + 3] = acc.S3;
        }
        Group.Barrier();
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (int w = 0; w < warps; w++)
        {
            int o = w * 4;
            s0 += scratch[o];
            s1 += scratch[o + 1];
            s2 += scratch[o + 2];
            s3 += scratch[o + 3];
        }
        acc.S0 = s0;
        acc.S1 = s1;
        acc.S2 = s2;
        acc.S3 = s3;
        return acc;
    }

    /// <summary>1 / rms of batch entry <paramref name="b"/>'s input of <paramref name="n"/> values, as RmsNormKernels computes it.</summary>
    static float InverseRms(Acc8 acc, int b, int n, float eps) => 1.0f / XMath.Sqrt(acc.S(b) / n + eps);

    /// <summary>y[b, r] (+)= W[r, :] . x[b, :]; one group per two rows.</summary>
    public static void MatVec<TW, TB>(MatVecArgs a)
        where TW : struct, IWeightFormat
        where TB : struct, IBatchWidth => MatVecTile<TW, PlainInput, TB>(a, Grid.IdxX);

    /// <summary>y[b, r] (+)= W[r, :] . rmsnorm(x[b, :]) * g, the RMSNorm fused (see the file header).</summary>
    public static void MatVecNorm<TW, TB>(MatVecArgs a)
        where TW : struct, IWeightFormat
        where TB : struct, IBatchWidth => MatVecTile<TW, RmsNormedInput, TB>(a, Grid.IdxX);

    /// <summary>One group's work of <see cref="MatVec{TW, TB}"/>: output rows 2 <paramref name="group"/> and 2 <paramref name="group"/> + 1 (also a task of the persistent decode kernel).</summary>
    internal static void MatVecTile<TW, TN, TB>(MatVecArgs a, int group)
        where TW : struct, IWeightFormat
        where TN : struct, IInputNorm
        where TB : struct, IBatchWidth
    {
        var w = a.W;
        var x = a.X;
        var y = a.Y;
        var s = a.Shape;
        int batch = default(TB).Count;
        int rowA = group * RowsPerGroup;
        // An odd last row reads itself twice rather than past the end of W; it is stored once.
        int rowB = XMath.Min(rowA + 1, s.Rows - 1);
        int chunks = ChunksPerRow<TW>(s.K8);
        // Batch tiles one after the other: the group's two rows come from cache after the first tile.
        for (int t = 0; t < s.Tiles; t++)
        {
            // The reduction's shared scratch is reused by the next tile: every thread must have read it.
            if (t > 0)
                Group.Barrier();
            int first = t * batch;
            Acc8 acc = DotRowPair<TW, TN>(w.SubView(rowA * chunks, chunks), w.SubView(rowB * chunks, chunks),
                ScalesRow<TW>(a.Scales, rowA, s.K8), ScalesRow<TW>(a.Scales, rowB, s.K8), x.SubView(first * 2 * s.K8, batch * 2 * s.K8), a.Norm.Weight, s.K8, batch);
            MatVecStore<TN>(acc, y, s, a.Norm.Eps, first, batch, rowA, rowB);
        }
    }

    static void MatVecStore<TN>(Acc8 acc, ArrayView<float> y, MatVecShape s, float eps, int first, int batch, int rowA, int rowB)
        where TN : struct, IInputNorm
    {
        // One thread per batch entry (looping, in case the group is narrower than the batch).
        for (int b = Group.IdxX; b < batch && first + b < s.Batch; b += Group.DimX)
        {
            int ya = (first + b) * s.YStride + rowA;
            float va = acc.A(b);
            float vb = acc.B(b);
            if (default(TN).Enabled)
            {
                float inv = InverseRms(acc, b, 8 * s.K8, eps);
                va *= inv;
                vb *= inv;
            }
            if (s.Accumulate != 0)
            {
                va += y[ya];
                if (rowB != rowA)
                    vb += y[ya + 1];
            }
            y[ya] = va;
            if (rowB != rowA)
                y[ya + 1] = vb;
        }
    }

    /// <summary>h[b, r] = silu(Wg[r] . x[b]) * (Wu[r] . x[b]); one group per intermediate row.</summary>
    public static void MatVecSwiGlu<TW, TB>(MatVecSwiGluArgs a)
        where TW : struct, IWeightFormat
        where TB : struct, IBatchWidth => MatVecSwiGluTile<TW, PlainInput, TB>(a, Grid.IdxX);

    /// <summary>h[b, r] = silu(Wg[r] . x'[b]) * (Wu[r] . x'[b]) with x' = rmsnorm(x) * g fused.</summary>
    public static void MatVecSwiGluNorm<TW, TB>(MatVecSwiGluArgs a)
        where TW : struct, IWeightFormat
        where TB : struct, IBatchWidth => MatVecSwiGluTile<TW, RmsNormedInput, TB>(a, Grid.IdxX);

    /// <summary>One group's work of <see cref="MatVecSwiGlu{TW, TB}"/>: intermediate row <paramref name="group"/> (also a task of the persistent decode kernel).</summary>
    internal static void MatVecSwiGluTile<TW, TN, TB>(MatVecSwiGluArgs a, int group)
        where TW : struct, IWeightFormat
        where TN : struct, IInputNorm
        where TB : struct, IBatchWidth
    {
        var wGate = a.Gate;
        var wUp = a.Up;
        var x = a.X;
        var h = a.H;
        var s = a.Shape;
        int batch = default(TB).Count;
        int row = group;
        int chunks = ChunksPerRow<TW>(s.K8);
        for (int t = 0; t < s.Tiles; t++)
        {
            // The reduction's shared scratch is reused by the next tile: every thread must have read it.
            if (t > 0)
                Group.Barrier();
            int first = t * batch;
            Acc8 acc = DotRowPair<TW, TN>(wGate.SubView(row * chunks, chunks), wUp.SubView(row * chunks, chunks),
                ScalesRow<TW>(a.GateScales, row, s.K8), ScalesRow<TW>(a.UpScales, row, s.K8), x.SubView(first * 2 * s.K8, batch * 2 * s.K8), a.Norm.Weight, s.K8, batch);
            SwiGluStore<TN>(acc, h, s, a.Norm.Eps, first, batch, row);
        }
    }

    static void SwiGluStore<TN>(Acc8 acc, ArrayView<float> h, MatVecShape s, float eps, int first, int batch, int row)
        where TN : struct, IInputNorm
    {
        // One thread per batch entry (looping, in case the group is narrower than the batch).
        for (int b = Group.IdxX; b < batch && first + b < s.Batch; b += Group.DimX)
        {
            float gate = acc.A(b);
            float up = acc.B(b);
            if (default(TN).Enabled)
            {
                float inv = InverseRms(acc, b, 8 * s.K8, eps);
                gate *= inv;
                up *= inv;
            }
            h[(first + b) * s.YStride + row] = DeviceMath.Silu(gate) * up;
        }
    }

    /// <summary>
    /// Fused q/k/v projection, rotate_half RoPE and fp16 KV-cache append for one decode step.
    /// Group g owns output rows (i, i + head_dim/2) of one head of q, k or v, which is exactly the
    /// pair RoPE mixes, so rotation happens in registers and k/v go straight into the cache.
    /// </summary>
    public static void MatVecQkvRope<TW, TB>(QkvRopeArgs a)
        where TW : struct, IWeightFormat
        where TB : struct, IBatchWidth => MatVecQkvRopeTile<TW, PlainInput, TB>(a, Grid.IdxX);

    /// <summary><see cref="MatVecQkvRope{TW, TB}"/> of rmsnorm(x) * g, the input norm fused.</summary>
    public static void MatVecQkvRopeNorm<TW, TB>(QkvRopeArgs a)
        where TW : struct, IWeightFormat
        where TB : struct, IBatchWidth => MatVecQkvRopeTile<TW, RmsNormedInput, TB>(a, Grid.IdxX);

    /// <summary>One group's work of <see cref="MatVecQkvRope{TW, TB}"/>: rotate_half pair <paramref name="group"/> of q, k or v (also a task of the persistent decode kernel).</summary>
    internal static void MatVecQkvRopeTile<TW, TN, TB>(QkvRopeArgs a, int group)
        where TW : struct, IWeightFormat
        where TN : struct, IInputNorm
        where TB : struct, IBatchWidth
    {
        int batch = default(TB).Count;
        int headDim = a.Cache.HeadDim;
        int half = headDim / 2;
        int pair = group + a.FirstPair;
        int qPairs = a.QDim / 2;
        int kvPairs = a.KvDim / 2;

        // kind 0 = q, 1 = k, 2 = v
        int kind = pair < qPairs ? 0 : pair < qPairs + kvPairs ? 1 : 2;
        int local = kind == 0 ? pair : kind == 1 ? pair - qPairs : pair - qPairs - kvPairs;
        int head = local / half;
        int i = local - head * half;
        int rowA = head * headDim + i;
        int rowB = rowA + half;
        ArrayView<U4> w = kind == 0 ? a.Wq : kind == 1 ? a.Wk : a.Wv;
        ArrayView<ushort> scales = kind == 0 ? a.QScales : kind == 1 ? a.KScales : a.VScales;

        int chunks = ChunksPerRow<TW>(a.K8);
        for (int t = 0; t < a.Tiles; t++)
        {
            // The reduction's shared scratch is reused by the next tile: every thread must have read it.
            if (t > 0)
                Group.Barrier();
            int first = t * batch;
            Acc8 acc = DotRowPair<TW, TN>(w.SubView(rowA * chunks, chunks), w.SubView(rowB * chunks, chunks),
                ScalesRow<TW>(scales, rowA, a.K8), ScalesRow<TW>(scales, rowB, a.K8), a.X.SubView(first * 2 * a.K8, batch * 2 * a.K8), a.Norm.Weight, a.K8, batch);
            QkvRopeStore<TN>(acc, a, first, batch, kind, head, i, rowA);
        }
    }

    static void QkvRopeStore<TN>(Acc8 acc, QkvRopeArgs a, int first, int batch, int kind, int head, int i, int rowA)
        where TN : struct, IInputNorm
    {
        int half = a.Cache.HeadDim / 2;
        for (int tb = Group.IdxX; tb < batch && first + tb < a.Batch; tb += Group.DimX)
        {
            int b = first + tb;
            float va = acc.A(tb);
            float vb = acc.B(tb);
            if (default(TN).Enabled)
            {
                float inv = InverseRms(acc, tb, 8 * a.K8, a.Norm.Eps);
                va *= inv;
                vb *= inv;
            }
            int pos = a.Positions[b];
            if (kind != 2)
            {
                int r = (pos * half + i) * 2;
                float cos = a.Rope[r];
                float sin = a.Rope[r + 1];
                float ra = va * cos - vb * sin;
                float rb = vb * cos + va * sin;
                va = ra;
                vb = rb;
            }
            if (kind == 0)
            {
                int o = b * a.QDim + rowA;
                a.Q[o] = va;
                a.Q[o + half] = vb;
            }
            else
            {
                int o = a.Cache.Offset(a.Slots[b], head, pos, i);
                ArrayView<ushort> cache = kind == 1 ? a.KCache : a.VCache;
                a.Cache.Store(cache, o, va);
                a.Cache.Store(cache, o + half, vb);
            }
        }
    }


    // ---- declarations ----------------------------------------------------------------------

    /// <summary>Family name (this file).</summary>
    public const string Family = "matvec";

    static LaunchShape GpuLaunch(KernelTuning t) => new(t.MatVecMaxGroup, 0,
        $"launched with 32..{t.MatVecMaxGroup} threads (in/32 rounded up to warps: 64 at hidden 2048, 256 for the 8192-wide down projection); table uses {t.MatVecMaxGroup}");

    /// <summary><see cref="MatVec{TW, TB}"/>, per weight format and batch width.</summary>
    public static KernelDefinition<MatVecArgs> MatVecKernel { get; } =
        KernelDefinition<MatVecArgs>.Explicit("matvec", Family, MatVec<Fp16Format.Device, Batch1>, GpuLaunch, WeightFormat.All, perBatchWidth: true);

    /// <summary><see cref="MatVecSwiGlu{TW, TB}"/>, per weight format and batch width.</summary>
    public static KernelDefinition<MatVecSwiGluArgs> SwiGluKernel { get; } =
        KernelDefinition<MatVecSwiGluArgs>.Explicit("matvec_swiglu", Family, MatVecSwiGlu<Fp16Format.Device, Batch1>, GpuLaunch, WeightFormat.All, perBatchWidth: true);

    /// <summary><see cref="MatVecQkvRope{TW, TB}"/>, per weight format and batch width.</summary>
    public static KernelDefinition<QkvRopeArgs> QkvRopeKernel { get; } =
        KernelDefinition<QkvRopeArgs>.Explicit("matvec_qkv_rope", Family, MatVecQkvRope<Fp16Format.Device, Batch1>, GpuLaunch, WeightFormat.All, perBatchWidth: true);

    /// <summary><see cref="MatVecNorm{TW, TB}"/> (RMSNorm fused), per weight format and batch width.</summary>
    public static KernelDefinition<MatVecArgs> MatVecNormKernel { get; } =
        KernelDefinition<MatVecArgs>.Explicit("matvec_norm", Family, MatVecNorm<Fp16Format.Device, Batch1>, GpuLaunch, WeightFormat.All, perBatchWidth: true);

    /// <summary><see cref="MatVecSwiGluNorm{TW, TB}"/> (RMSNorm fused), per weight format and batch width.</summary>
    public static KernelDefinition<MatVecSwiGluArgs> SwiGluNormKernel { get; } =
        KernelDefinition<MatVecSwiGluArgs>.Explicit("matvec_swiglu_norm", Family, MatVecSwiGluNorm<Fp16Format.Device, Batch1>, GpuLaunch, WeightFormat.All, perBatchWidth: true);

    /// <summary><see cref="MatVecQkvRopeNorm{TW, TB}"/> (RMSNorm fused), per weight format and batch width.</summary>
    public static KernelDefinition<QkvRopeArgs> QkvRopeNormKernel { get; } =
        KernelDefinition<QkvRopeArgs>.Explicit("matvec_qkv_rope_norm", Family, MatVecQkvRopeNorm<Fp16Format.Device, Batch1>, GpuLaunch, WeightFormat.All, perBatchWidth: true);

    // ---- launchers -------------------------------------------------------------------------

    /// <summary>Enough threads that each handles four chunks per row (one unrolled iteration), capped by the tuning.</summary>
    static int GroupSize(LlamaKernels k, int k8)
    {
        int warp = k.Accelerator.WarpSize;
        int want = Math.Max(warp, (k8 / 4 + warp - 1) / warp * warp);
        return Math.Min(want, k.Tuning.MatVecMaxGroup);
    }

    /// <summary>Checks a fused norm against a matvec's input and packs it for the kernel (empty when there is none).</summary>
    static InputNorm Pack(FusedNorm? norm, WeightMatrix w, string what)
    {
        if (norm is not { } n)
            return default;
        Require.That(n.Weight.Format == w.Format.VectorFormat,
            $"{what}: the fused norm's weight is {n.Weight.Format}, but a {w.Format} model's norm weights are {w.Format.VectorFormat}; they must share a 16-bit format");
        Require.Length(n.Weight.Values, w.Cols, $"{what} norm weight");
        return new InputNorm { Weight = n.Weight.Values.Cast<U4>(), Eps = n.Eps };
    }

    /// <summary>
    /// y[b, :] (+)= W x[b] for <paramref name="batch"/> (1..4) vectors; y rows are <paramref name="yStride"/>
    /// apart (default: W's rows). With <paramref name="norm"/>, x is the raw input of that RMSNorm
    /// and y = W rmsnorm(x): <see cref="MatVecNorm{TW, TB}"/>.
    /// </summary>
    public static void MatVec(this LlamaKernels k, WeightMatrix w, ArrayView<float> x, ArrayView<float> y, int batch, bool accumulate, int yStride = -1, FusedNorm? norm = null)
    {
        var (args, width) = MatVecArguments(w, x, y, batch, accumulate, yStride, norm);
        int groups = (w.Rows + RowsPerGroup - 1) / RowsPerGroup;
        var kernel = norm is null ? MatVecKernel : MatVecNormKernel;
        k.Launch(kernel, kernel.Variant(w.Format, width), new KernelConfig(groups, GroupSize(k, args.Shape.K8)), args);
    }

    /// <summary>The checked arguments of <see cref="MatVec(LlamaKernels, WeightMatrix, ArrayView{float}, ArrayView{float}, int, bool, int, FusedNorm?)"/> and the kernel width.</summary>
    internal static (MatVecArgs Args, int Width) MatVecArguments(WeightMatrix w, ArrayView<float> x, ArrayView<float> y, int batch, bool accumulate, int yStride = -1, FusedNorm? norm = null)
    {
        int rows = w.Rows, inDim = w.Cols;
        w.Check("matvec");
        var (width, tiles) = Tiling(batch);
        if (yStride < 0)
            yStride = rows;
        Require.Length(x, (long)width * tiles * inDim, batch > width ? $"matvec x (whole tiles of {width} rows)" : "matvec x");
        Require.Length(y, (long)(batch - 1) * yStride + rows, "matvec y");
        var args = new MatVecArgs
        {
            W = w.Chunks, Scales = w.Scales, X = x.Cast<F4>(), Y = y,
            Shape = new MatVecShape { Rows = rows, K8 = inDim / 8, YStride = yStride, Accumulate = accumulate ? 1 : 0, Tiles = tiles, Batch = batch },
            Norm = Pack(norm, w, "matvec"),
        };
        return (args, width);
    }

    /// <summary>Most vectors one decode-matvec launch takes (tiles of <see cref="BatchWidth.Max"/>).</summary>
    public const int MaxBatch = 64;

    /// <summary>
    /// The kernel width and the number of tiles of a batch: up to <see cref="BatchWidth.Max"/> one tile
    /// of exactly the batch; beyond, tiles of <see cref="BatchWidth.Max"/>, the last one partial (its
    /// input rows up to the whole tile must exist; its extra outputs are not written).
    /// </summary>
    public static (int Width, int Tiles) Tiling(int batch)
    {
        Require.That(batch >= 1 && batch <= MaxBatch, $"batch {batch} must be between 1 and {MaxBatch} for the decode kernels");
        int width = Math.Min(batch, BatchWidth.Max);
        return (width, (batch + width - 1) / width);
    }

    /// <summary>Input rows a decode matvec over <paramref name="batch"/> vectors reads (whole tiles).</summary>
    public static int PaddedBatch(int batch) => batch <= BatchWidth.Max ? batch : (batch + BatchWidth.Max - 1) / BatchWidth.Max * BatchWidth.Max;

    /// <summary>h[b, :] = silu(Wg x[b]) * (Wu x[b]); with <paramref name="norm"/>, of rmsnorm(x) (<see cref="MatVecSwiGluNorm{TW, TB}"/>).</summary>
    public static void MatVecSwiGlu(this LlamaKernels k, WeightMatrix gate, WeightMatrix up, ArrayView<float> x, ArrayView<float> h, int batch, FusedNorm? norm = null)
    {
        var (args, width) = SwiGluArguments(gate, up, x, h, batch, norm);
        var kernel = norm is null ? SwiGluKernel : SwiGluNormKernel;
        k.Launch(kernel, kernel.Variant(gate.Format, width), new KernelConfig(gate.Rows, GroupSize(k, args.Shape.K8)), args);
    }

    /// <summary>The checked arguments of <see cref="MatVecSwiGlu(LlamaKernels, WeightMatrix, WeightMatrix, ArrayView{float}, ArrayView{float}, int, FusedNorm?)"/> and the kernel width.</summary>
    internal static (MatVecSwiGluArgs Args, int Width) SwiGluArguments(WeightMatrix gate, WeightMatrix up, ArrayView<float> x, ArrayView<float> h, int batch, FusedNorm? norm = null)
    {
        int rows = gate.Rows, inDim = gate.Cols;
        gate.Check("swiglu gate");
        up.Check("swiglu up");
        var (width, tiles) = Tiling(batch);
        Require.That(up.Rows == rows && up.Cols == inDim && up.Format == gate.Format, $"matvec-swiglu: up [{up.Rows}, {up.Cols}] {up.Format} must match gate [{rows}, {inDim}] {gate.Format}");
        Require.Length(x, (long)width * tiles * inDim, batch > width ? $"swiglu x (whole tiles of {width} rows)" : "swiglu x");
        Require.Length(h, (long)batch * rows, "swiglu output");
        var args = new MatVecSwiGluArgs
        {
            Gate = gate.Chunks, Up = up.Chunks, GateScales = gate.Scales, UpScales = up.Scales, X = x.Cast<F4>(), H = h,
            Shape = new MatVecShape { Rows = rows, K8 = inDim / 8, YStride = rows, Tiles = tiles, Batch = batch },
            Norm = Pack(norm, gate, "matvec-swiglu"),
        };
        return (args, width);
    }

    /// <summary>Fused decode q/k/v projection + RoPE + KV append (see the file header); with <paramref name="norm"/>, of rmsnorm(x).</summary>
    public static void MatVecQkvRope(this LlamaKernels k, QkvWeights w, ArrayView<float> x, ArrayView<float> q, ArrayView<ushort> kCache, ArrayView<ushort> vCache,
        ArrayView<float> ropeTable, ArrayView<int> slots, ArrayView<int> positions, int batch, AttentionShape s, FusedNorm? norm = null)
    {
        var (args, width) = QkvRopeArguments(w, x, q, kCache, vCache, ropeTable, slots, positions, batch, s, norm);
        var kernel = norm is null ? QkvRopeKernel : QkvRopeNormKernel;
        if (w.V.Format == w.Q.Format)
        {
            k.Launch(kernel, kernel.Variant(w.Q.Format, width), new KernelConfig((s.QDim + 2 * s.KvDim) / 2, GroupSize(k, args.K8)), args);
            return;
        }
        // v in another format (a Q4_K_M model's Q6_K attn_v): q and k in one launch, v in a second of its own format.
        int qkPairs = (s.QDim + s.KvDim) / 2;
        k.Launch(kernel, kernel.Variant(w.Q.Format, width), new KernelConfig(qkPairs, GroupSize(k, args.K8)), args);
        k.Launch(kernel, kernel.Variant(w.V.Format, width), new KernelConfig(s.KvDim / 2, GroupSize(k, args.K8)), args with { FirstPair = qkPairs });
    }

    /// <summary>The checked arguments of the fused q/k/v launch and the kernel width.</summary>
    internal static (QkvRopeArgs Args, int Width) QkvRopeArguments(QkvWeights w, ArrayView<float> x, ArrayView<float> q, ArrayView<ushort> kCache, ArrayView<ushort> vCache,
        ArrayView<float> ropeTable, ArrayView<int> slots, ArrayView<int> positions, int batch, AttentionShape s, FusedNorm? norm)
    {
        int hidden = w.Q.Cols;
        w.Q.Check("q_proj");
        w.K.Check("k_proj");
        w.V.Check("v_proj");
        var (width, tiles) = Tiling(batch);
        Require.That(s.HeadDim % 2 == 0, $"head_dim {s.HeadDim} must be even");
        Require.That(w.Q.Rows == s.QDim && w.K.Rows == s.KvDim && w.V.Rows == s.KvDim && w.K.Cols == hidden && w.V.Cols == hidden,
            $"matvec-qkv: q/k/v weights [{w.Q.Rows}, {w.Q.Cols}], [{w.K.Rows}, {w.K.Cols}], [{w.V.Rows}, {w.V.Cols}] do not fit {s.Heads}/{s.KvHeads} heads x {s.HeadDim}");
        Require.That(w.K.Format == w.Q.Format, "matvec-qkv: q and k weights must share one format (v may have its own)");
        Require.Length(x, (long)width * tiles * hidden, batch > width ? $"qkv x (whole tiles of {width} rows)" : "qkv x");
        Require.Length(q, (long)batch * s.QDim, "qkv q output");
        Require.Length(slots, batch, "qkv slots");
        Require.Length(positions, batch, "qkv positions");
        Require.Length(ropeTable, (long)s.MaxSeq * s.HeadDim, "rope table");
        var args = new QkvRopeArgs
        {
            Wq = w.Q.Chunks, Wk = w.K.Chunks, Wv = w.V.Chunks, QScales = w.Q.Scales, KScales = w.K.Scales, VScales = w.V.Scales, X = x.Cast<F4>(), Q = q,
            KCache = kCache, VCache = vCache, Rope = ropeTable, Slots = slots, Positions = positions,
            Cache = s.Cache, K8 = hidden / 8, QDim = s.QDim, KvDim = s.KvDim, Tiles = tiles, Batch = batch, Norm = Pack(norm, w.Q, "matvec-qkv"),
        };
        return (args, width);
    }

    // ---- cost ------------------------------------------------------------------------------

    /// <summary>Global memory bytes one launch of <see cref="MatVec{TW, TB}"/> must move.</summary>
    public static long BytesMoved(WeightFormat format, int rows, int inDim, int batch, bool accumulate) =>
        format.MatrixBytes(rows, inDim) + 4L * batch * inDim + 4L * batch * rows * (accumulate ? 2 : 1);

    /// <summary>Floating-point operations of one launch (multiply and add counted separately).</summary>
    public static long Flops(int rows, int inDim, int batch) => 2L * rows * inDim * batch;

    /// <summary>Bytes of one <see cref="MatVecSwiGlu{TW, TB}"/> launch: both weight matrices, x, h.</summary>
    public static long SwiGluBytesMoved(WeightFormat format, int rows, int inDim, int batch) =>
        2L * format.MatrixBytes(rows, inDim) + 4L * batch * inDim + 4L * batch * rows;

    /// <summary>FLOPs of one <see cref="MatVecSwiGlu{TW, TB}"/> launch: two matvecs (the silu and product are negligible).</summary>
    public static long SwiGluFlops(int rows, int inDim, int batch) => 2 * Flops(rows, inDim, batch);

    /// <summary>
    /// Bytes of one <see cref="MatVecQkvRope{TW, TB}"/> launch: q/k/v weights, x, the rotated q (fp32),
    /// k and v appended to the cache (2 or 4 B a value), and the (cos, sin) table row of each position.
    /// </summary>
    public static long QkvRopeBytesMoved(WeightFormat format, int hidden, int batch, AttentionShape s) =>
        format.MatrixBytes(s.QDim + 2L * s.KvDim, hidden) + 4L * batch * hidden + 4L * batch * s.QDim
        + 2L * 2L * s.Cache.Words * batch * s.KvDim + 4L * batch * s.HeadDim;

    /// <summary>FLOPs of one <see cref="MatVecQkvRope{TW, TB}"/> launch: the three matvecs (RoPE is negligible).</summary>
    public static long QkvRopeFlops(int hidden, int batch, AttentionShape s) => Flops(s.QDim + 2 * s.KvDim, hidden, batch);
}

/// <summary>The matvec family: its kernels (the benchmark cases: <c>MatVecBenchCases</c> in kernels/IlgpuLlama.Kernels.Bench).</summary>
sealed class MatVecFamily : KernelFamily
{
    public override string Name => MatVecKernels.Family;

    public override IReadOnlyList<IKernelDefinition> Kernels =>
        [MatVecKernels.MatVecKernel, MatVecKernels.SwiGluKernel, MatVecKernels.QkvRopeKernel,
         MatVecKernels.MatVecNormKernel, MatVecKernels.SwiGluNormKernel, MatVecKernels.QkvRopeNormKernel];
}
