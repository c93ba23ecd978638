using IlgpuLlama.Kernels.Reference;

namespace IlgpuLlama.Kernels.Bench;

/// <summary>The kvcache family's validated benchmark case.</summary>
sealed class KvCacheBenchCases : FamilyBenchCases
{
    public override string Family => KvCacheKernels.Family;

    public override IEnumerable<BenchCase> BenchCases(BenchShapes s, SixteenBitFormat f)
    {
        int tokens = s.PrefillTokens;
        var cache = new KvCacheLayout(s.KvHeads, tokens, s.HeadDim);
        yield return new("kv_append", KvCacheKernels.Family, $"{tokens} tokens, {s.KvHeads} kv heads x {s.HeadDim}", tokens,
            KvCacheKernels.BytesMoved(tokens, cache), 0, ctx =>
            {
                int seed = ctx.SeedOf(14, tokens);
                var kv = HostData.Floats(seed, (long)tokens * cache.TokenElements);
                var v = HostData.Floats(seed + 1, (long)tokens * cache.TokenElements);
                int[] slots = new int[tokens];
                int[] positions = Enumerable.Range(0, tokens).ToArray();
                var kCache = HostData.HalfBits(seed + 2, cache.Elements(1));
                var vCache = HostData.HalfBits(seed + 3, cache.Elements(1));
                int copies = ctx.CopiesFor(8L * tokens * cache.TokenElements);
                var kb = ctx.Rotated("bench.kv_append.k", kv, copies);
                var vb = ctx.Rotated("bench.kv_append.v", v, copies);
                var kcb = ctx.Upload("bench.kv_append.k_cache", kCache);
                var vcb = ctx.Upload("bench.kv_append.v_cache", vCache);
                var sb = ctx.Upload("bench.kv_append.slots", slots);
                var pb = ctx.Upload("bench.kv_append.positions", positions);
                void Launch(int i) => ctx.Kernels.KvAppend(kb.Copy(i), vb.Copy(i), kcb, vcb, sb, pb, tokens, cache);

                Validation Validate()
                {
                    Launch(0);
                    var ek = (ushort[])kCache.Clone();
                    var ev = (ushort[])vCache.Clone();
                    KernelReference.KvAppend(kv, v, ek, ev, slots, positions, cache);
                    return Validation.From($"all {tokens} tokens", Tolerance.Fp16,
                        Tolerance.Fp16.Check("k cache", HostData.HalfToFloat(BenchContext.Read(kcb)), HostData.HalfToDouble(ek)),
                        Tolerance.Fp16.Check("v cache", HostData.HalfToFloat(BenchContext.Read(vcb)), HostData.HalfToDouble(ev)));
                }

                return new PreparedCase(copies, Validate, Launch);
            });
    }
}
