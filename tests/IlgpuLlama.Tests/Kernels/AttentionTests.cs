using ILGPU;
using ILGPU.Runtime;
using IlgpuLlama.Kernels;
using IlgpuLlama.Kernels.Reference;

namespace IlgpuLlama.Tests.Kernels;

[Collection(KernelCollection.Name)]
public sealed class AttentionTests(KernelTestContext ctx)
{
    // fp32 softmax and accumulation over fp16 K/V against a float64 reference on the same fp16 data.
    const double Abs = 1e-5, Rel = 1e-4;

    sealed record Case(float[] Q, ushort[] K, ushort[] V, int[] Slots, int[] Positions, double[] Expected);

    static Case Make(int seed, int heads, int kvHeads, int headDim, int maxSeq, int slotCount, int[] slots, int[] positions, KvCacheType type = KvCacheType.Fp16)
    {
        var rng = new Random(seed);
        int rows = slots.Length;
        var q = TestData.Floats(rng, rows * heads * headDim, 2.0);
        var shape = new AttentionShape(heads, kvHeads, headDim, maxSeq, type);
        int cacheLen = slotCount * kvHeads * maxSeq * headDim;
        var kc = TestData.KvCache(rng, cacheLen, shape.Cache, 2.0);
        var vc = TestData.KvCache(rng, cacheLen, shape.Cache);
        var expected = new double[rows * heads * headDim];
        KernelReference.Attention(q, kc, vc, slots, positions, expected, shape);
        return new Case(q, kc, vc, slots, positions, expected);
    }

    float[] Run(LlamaKernels k, Case c, int heads, int kvHeads, int headDim, int maxSeq, int splits, out int[] countersAfter, KvCacheType type = KvCacheType.Fp16,
        bool float64Scores = false)
    {
        var a = k.Accelerator;
        int rows = c.Slots.Length;
        using var qb = a.Allocate1D(c.Q);
        using var kb = a.Allocate1D(c.K);
        using var vb = a.Allocate1D(c.V);
        using var sb = a.Allocate1D(c.Slots);
        using var pb = a.Allocate1D(c.Positions);
        using var ob = a.Allocate1D<float>(rows * heads * headDim);
        using var accb = a.Allocate1D<float>(rows * heads * splits * headDim);
        using var mlb = a.Allocate1D<float>(rows * heads * splits * 2);
        using var cb = a.Allocate1D<int>(rows * kvHeads);
        cb.MemSetToZero();
        ob.MemSet(0xFF); // NaN poison: every output element must be written
        var shape = new AttentionShape(heads, kvHeads, headDim, maxSeq, type);
        var buffers = new AttentionBuffers(qb.View, kb.View, vb.View, sb.View, pb.View, ob.View, accb.View, mlb.View, cb.View);
        k.Attention(buffers, rows, splits, shape, float64Scores);
        var first = ob.GetAsArray1D();
        // A second launch over the same workspace must give the same answer (counters were reset).
        ob.MemSet(0xFF);
        k.Attention(buffers, rows, splits, shape, float64Scores);
        Assert.Equal(first, ob.GetAsArray1D());
        countersAfter = cb.GetAsArray1D();
        return first;
    }

    [Theory]
    [InlineData(4, 6, 2, 16, 4)]
    [InlineData(4, 4, 4, 16, 3)]
    [InlineData(4, 8, 2, 8, 5)]
    [InlineData(4, 6, 2, 16, 1)]
    [InlineData(32, 8, 2, 16, 4)]
    [InlineData(2, 8, 2, 16, 2)]
    [InlineData(4, 4, 2, 40, 3)] // head_dim 40: one batch of four 128-bit key chunks plus a tail chunk
    [InlineData(4, 2, 1, 64, 2)] // head_dim 64 as in Llama 3.2 1B
    [InlineData(1, 8, 2, 16, 1)]
    public void Decode_with_splits_matches_reference(int warp, int heads, int kvHeads, int headDim, int splits)
    {
        var k = ctx.Kernels(warp);
        int maxSeq = 90;
        // Positions 0 (one key), short, and long rows; two rows share a slot.
        int[] slots = [1, 0, 3, 1];
        int[] positions = [0, 4, 89, 37];
        var c = Make(heads * 31 + splits, heads, kvHeads, headDim, maxSeq, 4, slots, positions);
        var got = Run(k, c, heads, kvHeads, headDim, maxSeq, splits, out var counters);
        TestData.AssertClose("attention decode", got, c.Expected, Abs, Rel);
        Assert.All(counters, v => Assert.Equal(0, v));
    }

    [Theory]
    [InlineData(4, 4096, 8)]
    [InlineData(32, 3001, 16)]
    [InlineData(1, 4096, 1)]
    public void Decode_at_thousands_of_positions_matches_reference(int warp, int maxSeq, int splits)
    {
        // Long contexts: rows near the end of a few-thousand-position cache, one at the very last position,
        // so every split holds many chunks of keys and the softmax spans thousands of scores.
        var k = ctx.Kernels(warp);
        int[] slots = [0, 1];
        int[] positions = [maxSeq - 1, maxSeq * 2 / 3];
        var c = Make(maxSeq + splits, 2, 1, 16, maxSeq, 2, slots, positions);
        var got = Run(k, c, 2, 1, 16, maxSeq, splits, out var counters);
        TestData.AssertClose($"attention decode at {maxSeq} positions", got, c.Expected, Abs, Rel);
        Assert.All(counters, v => Assert.Equal(0, v));
    }

    [Theory]
    [InlineData(4, 6, 2, 16)]
    [InlineData(4, 8, 2, 8)]
    [InlineData(2, 6, 2, 16)]
    [InlineData(1, 6, 2, 16)]
    public void Prefill_is_causal_and_matches_reference(int warp, int heads, int kvHeads, int headDim)
    {
        var k = ctx.Kernels(warp);
        int maxSeq = 40;
        // Two prompts packed: 23 tokens in slot 2, 9 tokens in slot 0.
        var slots = Enumerable.Repeat(2, 23).Concat(Enumerable.Repeat(0, 9)).ToArray();
        var positions = Enumerable.Range(0, 23).Concat(Enumerable.Range(0, 9)).ToArray();
        var c = Make(heads + headDim, heads, kvHeads, headDim, maxSeq, 3, slots, positions);
        var got = Run(k, c, heads, kvHeads, headDim, maxSeq, 1, out _);
        TestData.AssertClose("attention prefill", got, c.Expected, Abs, Rel);
    }

    /// <summary>
    /// An fp32 cache (two 16-bit words per value): decode with splits and causal prefill against the
    /// float64 reference on the same fp32 values; head_dim 16 (one pair of 8-value chunks), 40 (pairs
    /// and a tail chunk) and 64; fp32 scores (attention_fp32) and float64 ones (attention_fp32_f64).
    /// </summary>
    [Theory]
    [InlineData(4, 6, 2, 16, 4, false)]
    [InlineData(4, 4, 2, 40, 3, false)]
    [InlineData(2, 2, 1, 64, 2, false)]
    [InlineData(1, 8, 2, 16, 1, false)]
    [InlineData(4, 4, 2, 40, 3, true)]
    [InlineData(1, 6, 2, 16, 1, true)]
    [InlineData(32, 2, 1, 64, 2, true)]
    public void An_fp32_cache_gives_decode_and_prefill_that_match_reference(int warp, int heads, int kvHeads, int headDim, int splits, bool float64Scores)
    {
        var k = ctx.Kernels(warp);
        int maxSeq = 90;
        int[] slots = [1, 0, 3, 1];
        int[] positions = [0, 4, 89, 37];
        var c = Make(heads * 17 + headDim, heads, kvHeads, headDim, maxSeq, 4, slots, positions, KvCacheType.Fp32);
        var got = Run(k, c, heads, kvHeads, headDim, maxSeq, splits, out var counters, KvCacheType.Fp32, float64Scores);
        TestData.AssertClose("attention decode over an fp32 cache", got, c.Expected, Abs, Rel);
        Assert.All(counters, v => Assert.Equal(0, v));

        var prefillSlots = Enumerable.Repeat(2, 23).Concat(Enumerable.Repeat(0, 9)).ToArray();
        var prefillPositions = Enumerable.Range(0, 23).Concat(Enumerable.Range(0, 9)).ToArray();
        var p = Make(heads + headDim, heads, kvHeads, headDim, maxSeq, 3, prefillSlots, prefillPositions, KvCacheType.Fp32);
        TestData.AssertClose("attention prefill over an fp32 cache", Run(k, p, heads, kvHeads, headDim, maxSeq, 1, out _, KvCacheType.Fp32, float64Scores), p.Expected, Abs, Rel);
    }

    [Fact]
    public void A_cache_that_is_not_whole_slots_of_its_type_is_refused()
    {
        var k = ctx.Kernels(4);
        var c = Make(3, 2, 1, 16, 10, 2, [0], [3]);
        // fp16 data (2 slots of fp16 words) read as an fp32 cache is one slot: whole, so the launcher
        // accepts it; a cache one word short is not.
        var a = k.Accelerator;
        using var qb = a.Allocate1D(c.Q);
        using var kb = a.Allocate1D<ushort>(c.K.Length - 1);
        using var vb = a.Allocate1D<ushort>(c.V.Length - 1);
        using var sb = a.Allocate1D(c.Slots);
        using var pb = a.Allocate1D(c.Positions);
        using var ob = a.Allocate1D<float>(2 * 16);
        var e = Assert.ThrowsAny<Exception>(() => k.Attention(new AttentionBuffers(qb.View, kb.View, vb.View, sb.View, pb.View, ob.View, default, default, default), 1, 1,
            new AttentionShape(2, 1, 16, 10, KvCacheType.Fp32)));
        Assert.Contains("not whole slots of 160 fp32 values", e.Message);
    }
}
