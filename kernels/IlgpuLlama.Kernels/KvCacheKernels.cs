namespace IlgpuLlama.Kernels;

// KV append: write this step's K (already rotated) and V (fp16 or fp32, KvCacheLayout.Store) into the preallocated cache at
// each token's sequence slot and position (layout: KvCacheLayout). Decomposition: one thread per
// element of k and v (implicitly grouped, grid = tokens * kv_dim). Decode fuses this into
// MatVecQkvRope.

/// <summary>Arguments of <see cref="KvCacheKernels.KvAppend(Index1D, KvAppendArgs)"/>.</summary>
public struct KvAppendArgs
{
    public ArrayView<float> K;         // [tokens, kv_dim] fp32
    public ArrayView<float> V;         // [tokens, kv_dim] fp32
    public ArrayView<ushort> KCache;   // this layer's K cache, 16-bit words (KvCacheLayout)
    public ArrayView<ushort> VCache;   // same layout
    public ArrayView<int> Slots;       // [tokens] cache slot (sequence) of each token
    public ArrayView<int> Positions;   // [tokens] position of each token in its sequence
    public KvCacheLayout Cache;
}

/// <summary>Writes K and V rows into the KV cache.</summary>
public static class KvCacheKernels
{
    /// <param name="index">flat index over [tokens, kv_dim]</param>
    /// <param name="a">the rows, the cache and where each token goes</param>
    public static void KvAppend(Index1D index, KvAppendArgs a)
    {
        int headDim = a.Cache.HeadDim;
        int kvDim = a.Cache.TokenElements;
        int t = index / kvDim;
        int e = index - t * kvDim;
        int head = e / headDim;
        int d = e - head * headDim;
        int o = a.Cache.Offset(a.Slots[t], head, a.Positions[t], d);
        a.Cache.Store(a.KCache, o, a.K[index]);
        a.Cache.Store(a.VCache, o, a.V[index]);
    }

    // ---- declaration, launcher, cost ------------------------------------------------------

    /// <summary>Family name (this file).</summary>
    public const string Family = "kvcache";

    /// <summary><see cref="KvAppend(Index1D, KvAppendArgs)"/>.</summary>
    public static KernelDefinition<KvAppendArgs> KvAppendKernel { get; } = KernelDefinition<KvAppendArgs>.Implicit("kv_append", Family, KvAppend);

    /// <summary>Writes k and v of <paramref name="tokens"/> tokens into the cache.</summary>
    public static void KvAppend(this LlamaKernels k, ArrayView<float> kv, ArrayView<float> v, ArrayView<ushort> kCache, ArrayView<ushort> vCache,
        ArrayView<int> slots, ArrayView<int> positions, int tokens, KvCacheLayout cache)
    {
        Require.Length(kv, (long)tokens * cache.TokenElements, "kv append k");
        Require.Length(v, (long)tokens * cache.TokenElements, "kv append v");
        Require.Length(slots, tokens, "kv append slots");
        Require.Length(positions, tokens, "kv append positions");
        Require.That(kCache.Length % (cache.SlotElements * cache.Words) == 0 && kCache.Length == vCache.Length,
            $"kv append: caches of {kCache.Length} and {vCache.Length} words are not whole slots of {cache.SlotElements} {cache.Type.Name()} values");
        var args = new KvAppendArgs { K = kv, V = v, KCache = kCache, VCache = vCache, Slots = slots, Positions = positions, Cache = cache };
        k.Launch(KvAppendKernel, KernelVariant.None, tokens * cache.TokenElements, args);
    }

    /// <summary>Bytes: k and v read as fp32 and written in the cache's type, plus slot and position per token.</summary>
    public static long BytesMoved(int tokens, KvCacheLayout cache) => (long)tokens * cache.TokenElements * 2L * (4 + 2 * cache.Words) + 8L * tokens;
}

/// <summary>The kvcache family: its kernel (the benchmark cases: <c>KvCacheBenchCases</c> in kernels/IlgpuLlama.Kernels.Bench).</summary>
sealed class KvCacheFamily : KernelFamily
{
    public override string Name => KvCacheKernels.Family;

    public override IReadOnlyList<IKernelDefinition> Kernels => [KvCacheKernels.KvAppendKernel];
}
