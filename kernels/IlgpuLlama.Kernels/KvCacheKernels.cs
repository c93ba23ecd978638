namespace IlgpuLlama.Kernels;

// KV append: write this step's K (already rotated) and V as fp16 into the preallocated cache
// at each token's sequence slot and position. Cache layout per layer:
// [slots, kv_heads, max_seq, head_dim] fp16, so one position of one head is head_dim contiguous
// halves (what attention reads per key). Decomposition: one thread per element of k and v
// (implicitly grouped, grid = tokens * kv_dim). Decode fuses this into MatVecQkvRope.

/// <summary>Writes K and V rows into the fp16 KV cache.</summary>
public static class KvCacheKernels
{
    /// <param name="index">flat index over [tokens, kv_dim]</param>
    /// <param name="k">[tokens, kv_dim] fp32</param>
    /// <param name="v">[tokens, kv_dim] fp32</param>
    /// <param name="kCache">[slots, kv_heads, max_seq, head_dim] fp16 bits</param>
    /// <param name="vCache">same layout as kCache</param>
    /// <param name="slots">[tokens] cache slot (sequence) of each token</param>
    /// <param name="positions">[tokens] position of each token in its sequence</param>
    public static void KvAppend(Index1D index, ArrayView<float> k, ArrayView<float> v, ArrayView<ushort> kCache, ArrayView<ushort> vCache,
        ArrayView<int> slots, ArrayView<int> positions, int kvHeads, int headDim, int maxSeq)
    {
        int kvDim = kvHeads * headDim;
        int t = index / kvDim;
        int e = index - t * kvDim;
        int head = e / headDim;
        int d = e - head * headDim;
        int o = ((slots[t] * kvHeads + head) * maxSeq + positions[t]) * headDim + d;
        kCache[o] = DeviceMath.ToHalfBits(k[index]);
        vCache[o] = DeviceMath.ToHalfBits(v[index]);
    }

    /// <summary>Bytes: k and v read as fp32 and written as fp16, plus slot and position per token.</summary>
    public static long BytesMoved(int tokens, int kvHeads, int headDim) => (long)tokens * kvHeads * headDim * 12L + 8L * tokens;
}
