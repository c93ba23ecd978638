using IlgpuLlama.Kernels.Reference;

namespace IlgpuLlama.Kernels.Bench;

/// <summary>The attention family's validated decode and prefill benchmark cases.</summary>
sealed class AttentionBenchCases : FamilyBenchCases
{
    public override string Family => AttentionKernels.Family;

    public override IEnumerable<BenchCase> BenchCases(BenchShapes s, SixteenBitFormat f)
    {
        foreach (int seq in s.DecodeSeqs)
            foreach (int b in new[] { 1, 4 })
                yield return Decode(s, seq, b);
        yield return Prefill(s, s.PrefillTokens);
    }

    sealed record Setup(int Rows, int[] Slots, int[] Positions, int SlotCount, int Splits);

    static PreparedCase Prepare(BenchContext ctx, AttentionShape shape, Setup a, long streamedBytes, int seed, string name)
    {
        long cacheLen = shape.Cache.Elements(a.SlotCount);
        var q = HostData.Floats(seed, (long)a.Rows * shape.QDim);
        var kCache = HostData.HalfBits(seed + 1, cacheLen);
        var vCache = HostData.HalfBits(seed + 2, cacheLen);
        int copies = ctx.CopiesFor(streamedBytes);
        var qb = ctx.Upload($"bench.{name}.q", q);
        var kb = ctx.Rotated($"bench.{name}.k_cache", kCache, copies);
        var vb = ctx.Rotated($"bench.{name}.v_cache", vCache, copies);
        var sb = ctx.Upload($"bench.{name}.slots", a.Slots);
        var pb = ctx.Upload($"bench.{name}.positions", a.Positions);
        var ob = ctx.Alloc<float>($"bench.{name}.out", a.Rows, shape.QDim);
        var accb = ctx.Alloc<float>($"bench.{name}.partial_acc", a.Rows, shape.Heads, a.Splits, shape.HeadDim);
        var mlb = ctx.Alloc<float>($"bench.{name}.partial_ml", a.Rows, shape.Heads, a.Splits, 2);
        var cb = ctx.Upload($"bench.{name}.counters", new int[a.Rows * shape.KvHeads]);
        void Launch(int i) => ctx.Kernels.Attention(new AttentionBuffers(qb, kb.Copy(i), vb.Copy(i), sb, pb, ob, accb, mlb, cb), a.Rows, a.Splits, shape);

        Validation Validate()
        {
            Launch(0);
            var expected = new double[(long)a.Rows * shape.QDim];
            KernelReference.Attention(q, kCache, vCache, a.Slots, a.Positions, expected, shape);
            var counters = BenchContext.Read(cb);
            var c = Tolerance.Attention.Check("attention", BenchContext.Read(ob), expected);
            var reset = counters.All(v => v == 0)
                ? Comparison.Check("counters reset", [0f], [0d], 0, 0)
                : new Comparison(false, double.PositiveInfinity, 1, "split counters were not reset to zero");
            return Validation.From($"all {a.Rows} rows, {a.Splits} splits", Tolerance.Attention, c, reset);
        }

        return new PreparedCase(copies, Validate, Launch);
    }

    static BenchCase Decode(BenchShapes s, int seq, int batch)
    {
        var shape = new AttentionShape(s.Heads, s.KvHeads, s.HeadDim, seq);
        return new("attention", AttentionKernels.Family, $"decode seq {seq}, {s.Heads}/{s.KvHeads} heads x {s.HeadDim}", batch,
            AttentionKernels.BytesMoved(batch, shape, seq), AttentionKernels.Flops(batch, shape, seq), ctx =>
            {
                int splits = AttentionKernels.Splits(seq, ctx.Kernels.Tuning);
                var setup = new Setup(batch, Enumerable.Range(0, batch).ToArray(), Enumerable.Repeat(seq - 1, batch).ToArray(), batch, splits);
                return Prepare(ctx, shape, setup, 2L * 2L * batch * shape.KvDim * seq, ctx.SeedOf(7, seq, batch), "attention");
            });
    }

    static BenchCase Prefill(BenchShapes s, int tokens)
    {
        var shape = new AttentionShape(s.Heads, s.KvHeads, s.HeadDim, tokens);
        return new("attention", AttentionKernels.Family, $"prefill {tokens} tokens, {s.Heads}/{s.KvHeads} heads x {s.HeadDim}", 1,
            AttentionKernels.PrefillBytesMoved(tokens, shape), AttentionKernels.PrefillFlops(tokens, shape), ctx =>
            {
                var setup = new Setup(tokens, new int[tokens], Enumerable.Range(0, tokens).ToArray(), 1, 1);
                return Prepare(ctx, shape, setup, 2L * 2L * shape.KvDim * tokens, ctx.SeedOf(8, tokens), "attention_prefill");
            });
    }
}
