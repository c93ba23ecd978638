
namespace IlgpuLlama.Kernels;

// Decode matmul: y[b, r] = sum_k W[r, k] * x[b, k] for up to four activation vectors at once.
//
// Weights are 16-bit, row-major [rows, in], read as 128-bit chunks (U4 = 8 weights). Every weight
// byte is read exactly once per step for the whole batch; x (fp32, [batch, in]) is re-read from
// L1/L2 by every group, which is cheap because it is small.
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
}

/// <summary>Arguments of the fused q/k/v projection with RoPE and KV-cache append.</summary>
public struct QkvRopeArgs
{
    public ArrayView<U4> Wq;          // [q_dim, hidden] 16-bit
    public ArrayView<U4> Wk;          // [kv_dim, hidden]
    public ArrayView<U4> Wv;          // [kv_dim, hidden]
    public ArrayView<F4> X;           // [batch, hidden] fp32 (normed)
    public ArrayView<float> Q;        // [batch, q_dim] fp32 out, rotated
    public ArrayView<ushort> KCache;  // [slots, kv_heads, max_seq, head_dim] fp16, this layer
    public ArrayView<ushort> VCache;  // same layout
    public ArrayView<float> Rope;     // [max_seq, head_dim/2, 2] (cos, sin)
    public ArrayView<int> Slots;      // [batch] cache slot of each sequence
    public ArrayView<int> Positions;  // [batch] position of this step's token
    public int K8, QDim, KvDim, HeadDim, KvHeads, MaxSeq;
}

/// <summary>
/// The decode batch as a compile-time constant: each kernel is specialised per batch width so the
/// code and registers for absent batch entries disappear (batch 1, the latency-critical case,
/// needs far fewer registers than batch 4, so more groups fit on an SM).
/// </summary>
public interface IBatchWidth
{
    /// <summary>Number of activation vectors.</summary>
    int Count { get; }
}

/// <summary>One vector.</summary>
public struct Batch1 : IBatchWidth
{
    public readonly int Count => 1;
}

/// <summary>Two vectors.</summary>
public struct Batch2 : IBatchWidth
{
    public readonly int Count => 2;
}

/// <summary>Three vectors.</summary>
public struct Batch3 : IBatchWidth
{
    public readonly int Count => 3;
}

/// <summary>Four vectors.</summary>
public struct Batch4 : IBatchWidth
{
    public readonly int Count => 4;
}

/// <summary>Eight partial sums: rows A and B for batch entries 0..3.</summary>
public struct Acc8
{
    public float A0, A1, A2, A3, B0, B1, B2, B3;

    public readonly float A(int b) => b == 0 ? A0 : b == 1 ? A1 : b == 2 ? A2 : A3;
    public readonly float B(int b) => b == 0 ? B0 : b == 1 ? B1 : b == 2 ? B2 : B3;
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
}

/// <summary>Decode matmul kernels (GEMV over up to four vectors). See the file header.</summary>
public static class MatVecKernels
{
    /// <summary>Output rows per group in <see cref="MatVec{TW, TB}"/>.</summary>
    public const int RowsPerGroup = 2;

    /// <summary>Largest batch the decode kernels handle in one pass.</summary>
    public const int MaxBatch = 4;

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

    static Acc8 AccumulateChunk<TW>(Acc8 acc, U4 wa, U4 wb, ArrayView<F4> x, int xOffset, int k4, int batch)
        where TW : struct, IWeightFormat
    {
        W8 a = Widen<TW>(wa);
        W8 b = Widen<TW>(wb);
        F4 x0 = x[xOffset];
        F4 x1 = x[xOffset + 1];
        acc.A0 += a.Dot(x0, x1);
        acc.B0 += b.Dot(x0, x1);
        if (batch > 1)
        {
            x0 = x[k4 + xOffset];
            x1 = x[k4 + xOffset + 1];
            acc.A1 += a.Dot(x0, x1);
            acc.B1 += b.Dot(x0, x1);
        }
        if (batch > 2)
        {
            x0 = x[2 * k4 + xOffset];
            x1 = x[2 * k4 + xOffset + 1];
            acc.A2 += a.Dot(x0, x1);
            acc.B2 += b.Dot(x0, x1);
        }
        if (batch > 3)
        {
            x0 = x[3 * k4 + xOffset];
            x1 = x[3 * k4 + xOffset + 1];
            acc.A3 += a.Dot(x0, x1);
            acc.B3 += b.Dot(x0, x1);
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
    public static Acc8 DotRowPair<TW>(ArrayView<U4> rowA, ArrayView<U4> rowB, ArrayView<F4> x, int k8, int batch)
        where TW : struct, IWeightFormat
    {
        var scratch = SharedMemory.Allocate<float>(MaxWarps * 8);
        int stride = Group.DimX;
        int k4 = k8 * 2;
        Acc8 acc = default;

        // Four chunks per row in flight: all eight 128-bit loads are issued before the first use,
        // so each thread keeps 128 bytes of weights moving (the loop body is unrolled by hand:
        // ILGPU 1.5 does not unroll). Shorter tails take two chunks, then one.
        int c = Group.IdxX;
        for (; c + 3 * stride < k8; c += 4 * stride)
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
            acc = AccumulateChunk<TW>(acc, wa0, wb0, x, 2 * c, k4, batch);
            acc = AccumulateChunk<TW>(acc, wa1, wb1, x, 2 * c1, k4, batch);
            acc = AccumulateChunk<TW>(acc, wa2, wb2, x, 2 * c2, k4, batch);
            acc = AccumulateChunk<TW>(acc, wa3, wb3, x, 2 * c3, k4, batch);
        }
        if (c + stride < k8)
        {
            int c1 = c + stride;
            U4 wa0 = rowA[c];
            U4 wb0 = rowB[c];
            U4 wa1 = rowA[c1];
            U4 wb1 = rowB[c1];
            acc = AccumulateChunk<TW>(acc, wa0, wb0, x, 2 * c, k4, batch);
            acc = AccumulateChunk<TW>(acc, wa1, wb1, x, 2 * c1, k4, batch);
            c += 2 * stride;
        }
        if (c < k8)
            acc = AccumulateChunk<TW>(acc, rowA[c], rowB[c], x, 2 * c, k4, batch);

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
        if (warps == 1)
            return acc;

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
        return total;
    }

    /// <summary>y[b, r] (+)= W[r, :] . x[b, :]; one group per two rows.</summary>
    /// <param name="w">[rows, k8] U4</param>
    /// <param name="x">[batch, k8 * 2] F4</param>
    /// <param name="y">[batch, yStride] fp32</param>
    public static void MatVec<TW, TB>(ArrayView<U4> w, ArrayView<F4> x, ArrayView<float> y, MatVecShape s)
        where TW : struct, IWeightFormat
        where TB : struct, IBatchWidth
    {
        int batch = default(TB).Count;
        int rowA = Grid.IdxX * RowsPerGroup;
        // An odd last row reads itself twice rather than past the end of W; it is stored once.
        int rowB = XMath.Min(rowA + 1, s.Rows - 1);
        Acc8 acc = DotRowPair<TW>(w.SubView(rowA * s.K8, s.K8), w.SubView(rowB * s.K8, s.K8), x, s.K8, batch);

        // One thread per batch entry (looping, in case the group is narrower than the batch).
        for (int b = Group.IdxX; b < batch; b += Group.DimX)
        {
            int ya = b * s.YStride + rowA;
            float va = acc.A(b);
            float vb = acc.B(b);
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
    /// <param name="wGate">[inter, k8] U4</param>
    /// <param name="wUp">[inter, k8] U4</param>
    /// <param name="x">[batch, k8 * 2] F4</param>
    /// <param name="h">[batch, inter] fp32</param>
    public static void MatVecSwiGlu<TW, TB>(ArrayView<U4> wGate, ArrayView<U4> wUp, ArrayView<F4> x, ArrayView<float> h, MatVecShape s)
        where TW : struct, IWeightFormat
        where TB : struct, IBatchWidth
    {
        int batch = default(TB).Count;
        int row = Grid.IdxX;
        Acc8 acc = DotRowPair<TW>(wGate.SubView(row * s.K8, s.K8), wUp.SubView(row * s.K8, s.K8), x, s.K8, batch);
        // One thread per batch entry (looping, in case the group is narrower than the batch).
        for (int b = Group.IdxX; b < batch; b += Group.DimX)
            h[b * s.YStride + row] = DeviceMath.Silu(acc.A(b)) * acc.B(b);
    }

    /// <summary>
    /// Fused q/k/v projection, rotate_half RoPE and fp16 KV-cache append for one decode step.
    /// Group g owns output rows (i, i + head_dim/2) of one head of q, k or v, which is exactly the
    /// pair RoPE mixes, so rotation happens in registers and k/v go straight into the cache.
    /// </summary>
    public static void MatVecQkvRope<TW, TB>(QkvRopeArgs a)
        where TW : struct, IWeightFormat
        where TB : struct, IBatchWidth
    {
        int batch = default(TB).Count;
        int half = a.HeadDim / 2;
        int pair = Grid.IdxX;
        int qPairs = a.QDim / 2;
        int kvPairs = a.KvDim / 2;

        // kind 0 = q, 1 = k, 2 = v
        int kind = pair < qPairs ? 0 : pair < qPairs + kvPairs ? 1 : 2;
        int local = kind == 0 ? pair : kind == 1 ? pair - qPairs : pair - qPairs - kvPairs;
        int head = local / half;
        int i = local - head * half;
        int rowA = head * a.HeadDim + i;
        int rowB = rowA + half;
        ArrayView<U4> w = kind == 0 ? a.Wq : kind == 1 ? a.Wk : a.Wv;

        Acc8 acc = DotRowPair<TW>(w.SubView(rowA * a.K8, a.K8), w.SubView(rowB * a.K8, a.K8), a.X, a.K8, batch);

        for (int b = Group.IdxX; b < batch; b += Group.DimX)
        {
            float va = acc.A(b);
            float vb = acc.B(b);
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
                int o = ((a.Slots[b] * a.KvHeads + head) * a.MaxSeq + pos) * a.HeadDim + i;
                ArrayView<ushort> cache = kind == 1 ? a.KCache : a.VCache;
                cache[o] = DeviceMath.ToHalfBits(va);
                cache[o + half] = DeviceMath.ToHalfBits(vb);
            }
        }
    }

    /// <summary>Global memory bytes one launch of <see cref="MatVec{TW, TB}"/> must move.</summary>
    public static long BytesMoved(int rows, int inDim, int batch, bool accumulate) =>
        2L * rows * inDim + 4L * batch * inDim + 4L * batch * rows * (accumulate ? 2 : 1);

    /// <summary>Floating-point operations of one launch (multiply and add counted separately).</summary>
    public static long Flops(int rows, int inDim, int batch) => 2L * rows * inDim * batch;

    /// <summary>Bytes of one <see cref="MatVecSwiGlu{TW, TB}"/> launch: both weight matrices, x, h.</summary>
    public static long SwiGluBytesMoved(int rows, int inDim, int batch) =>
        2L * 2L * rows * inDim + 4L * batch * inDim + 4L * batch * rows;

    /// <summary>FLOPs of one <see cref="MatVecSwiGlu{TW, TB}"/> launch: two matvecs (the silu and product are negligible).</summary>
    public static long SwiGluFlops(int rows, int inDim, int batch) => 2 * Flops(rows, inDim, batch);

    /// <summary>
    /// Bytes of one <see cref="MatVecQkvRope{TW, TB}"/> launch: q/k/v weights, x, the rotated q (fp32),
    /// k and v appended to the cache (fp16), and the (cos, sin) table row of each position.
    /// </summary>
    public static long QkvRopeBytesMoved(int hidden, int batch, int heads, int kvHeads, int headDim) =>
        2L * (heads + 2L * kvHeads) * headDim * hidden + 4L * batch * hidden + 4L * batch * heads * headDim
        + 2L * 2L * batch * kvHeads * headDim + 4L * batch * headDim;

    /// <summary>FLOPs of one <see cref="MatVecQkvRope{TW, TB}"/> launch: the three matvecs (RoPE is negligible).</summary>
    public static long QkvRopeFlops(int hidden, int batch, int heads, int kvHeads, int headDim) =>
        Flops((heads + 2 * kvHeads) * headDim, hidden, batch);
}
