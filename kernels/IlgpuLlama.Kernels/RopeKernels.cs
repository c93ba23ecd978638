namespace IlgpuLlama.Kernels;

// Rotary position embedding in the Hugging Face rotate_half layout: within each head the pair
// (i, i + head_dim/2) is rotated by angle pos * inv_freq[i]:
//   out[i]        = x[i] * cos - x[i + half] * sin
//   out[i + half] = x[i + half] * cos + x[i] * sin
// cos/sin come from a table [max_seq, head_dim/2, 2] computed once on the host in float64 from
// rope_theta and the "llama3" rope_scaling (see RopeTable), so no transcendental runs on device
// and large positions keep full precision.
// Decomposition: one thread per rotated pair over q and k of every token (implicitly grouped,
// grid = tokens * (heads + kv_heads) * head_dim/2). Used by prefill; decode fuses RoPE into
// MatVecQkvRope.

/// <summary>Rotary embedding, applied in place to q and k.</summary>
public static class RopeKernels
{
    /// <param name="index">flat index over [tokens, heads + kv_heads, head_dim / 2]</param>
    /// <param name="q">[tokens, heads * head_dim] fp32, in place</param>
    /// <param name="k">[tokens, kv_heads * head_dim] fp32, in place</param>
    /// <param name="positions">[tokens]</param>
    /// <param name="rope">[max_seq, head_dim / 2, 2] cos, sin</param>
    public static void Rope(Index1D index, ArrayView<float> q, ArrayView<float> k, ArrayView<int> positions, ArrayView<float> rope,
        int heads, int kvHeads, int headDim)
    {
        int half = headDim / 2;
        int perToken = (heads + kvHeads) * half;
        int t = index / perToken;
        int rest = index - t * perToken;
        int head = rest / half;
        int i = rest - head * half;

        int r = (positions[t] * half + i) * 2;
        float cos = rope[r];
        float sin = rope[r + 1];

        ArrayView<float> v = head < heads ? q : k;
        int o = head < heads
            ? t * heads * headDim + head * headDim + i
            : t * kvHeads * headDim + (head - heads) * headDim + i;
        float a = v[o];
        float b = v[o + half];
        v[o] = a * cos - b * sin;
        v[o + half] = b * cos + a * sin;
    }

    /// <summary>Bytes: per rotated pair two fp32 read and written, and its (cos, sin) read.</summary>
    public static long BytesMoved(int tokens, int heads, int kvHeads, int headDim) =>
        (long)tokens * (heads + kvHeads) * (headDim / 2) * 24L + 4L * tokens;

    /// <summary>FLOPs: four multiplies and two adds per rotated pair.</summary>
    public static long Flops(int tokens, int heads, int kvHeads, int headDim) => (long)tokens * (heads + kvHeads) * (headDim / 2) * 6L;
}
