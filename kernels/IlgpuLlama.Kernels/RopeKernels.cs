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

/// <summary>Arguments of <see cref="RopeKernels.Rope(Index1D, RopeArgs)"/>.</summary>
public struct RopeArgs
{
    public ArrayView<float> Q;         // [tokens, heads * head_dim] fp32, in place
    public ArrayView<float> K;         // [tokens, kv_heads * head_dim] fp32, in place
    public ArrayView<int> Positions;   // [tokens]
    public ArrayView<float> Table;     // [max_seq, head_dim / 2, 2] cos, sin
    public int Heads, KvHeads, HeadDim;
}

/// <summary>Rotary embedding, applied in place to q and k.</summary>
public static class RopeKernels
{
    /// <param name="index">flat index over [tokens, heads + kv_heads, head_dim / 2]</param>
    /// <param name="a">q, k, positions, the table and the head counts</param>
    public static void Rope(Index1D index, RopeArgs a)
    {
        int heads = a.Heads, kvHeads = a.KvHeads, headDim = a.HeadDim;
        var positions = a.Positions;
        var rope = a.Table;
        int half = headDim / 2;
        int perToken = (heads + kvHeads) * half;
        int t = index / perToken;
        int rest = index - t * perToken;
        int head = rest / half;
        int i = rest - head * half;

        int r = (positions[t] * half + i) * 2;
        float cos = rope[r];
        float sin = rope[r + 1];

        ArrayView<float> v = head < heads ? a.Q : a.K;
        int o = head < heads
            ? t * heads * headDim + head * headDim + i
            : t * kvHeads * headDim + (head - heads) * headDim + i;
        float lo = v[o];
        float hi = v[o + half];
        v[o] = lo * cos - hi * sin;
        v[o + half] = hi * cos + lo * sin;
    }

    // ---- declaration, launcher, cost ------------------------------------------------------

    /// <summary>Family name (this file).</summary>
    public const string Family = "rope";

    /// <summary><see cref="Rope(Index1D, RopeArgs)"/>.</summary>
    public static KernelDefinition<RopeArgs> RopeKernel { get; } = KernelDefinition<RopeArgs>.Implicit("rope", Family, Rope);

    /// <summary>In-place rotate_half RoPE of q and k for <paramref name="tokens"/> tokens.</summary>
    public static void Rope(this LlamaKernels k, ArrayView<float> q, ArrayView<float> kv, ArrayView<int> positions, ArrayView<float> ropeTable, int tokens, AttentionShape s)
    {
        Require.That(s.HeadDim % 2 == 0, $"rope: head_dim {s.HeadDim} must be even");
        Require.Length(q, (long)tokens * s.QDim, "rope q");
        Require.Length(kv, (long)tokens * s.KvDim, "rope k");
        Require.Length(positions, tokens, "rope positions");
        var args = new RopeArgs { Q = q, K = kv, Positions = positions, Table = ropeTable, Heads = s.Heads, KvHeads = s.KvHeads, HeadDim = s.HeadDim };
        k.Launch(RopeKernel, KernelVariant.None, tokens * (s.Heads + s.KvHeads) * (s.HeadDim / 2), args);
    }

    /// <summary>Bytes: per rotated pair two fp32 read and written, and its (cos, sin) read.</summary>
    public static long BytesMoved(int tokens, AttentionShape s) => (long)tokens * (s.Heads + s.KvHeads) * (s.HeadDim / 2) * 24L + 4L * tokens;

    /// <summary>FLOPs: four multiplies and two adds per rotated pair.</summary>
    public static long Flops(int tokens, AttentionShape s) => (long)tokens * (s.Heads + s.KvHeads) * (s.HeadDim / 2) * 6L;
}

/// <summary>The rope family: its kernel (the benchmark cases: <c>RopeBenchCases</c> in kernels/IlgpuLlama.Kernels.Bench).</summary>
sealed class RopeFamily : KernelFamily
{
    public override string Name => RopeKernels.Family;

    public override IReadOnlyList<IKernelDefinition> Kernels => [RopeKernels.RopeKernel];
}
