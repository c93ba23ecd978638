using ILGPU;
using ILGPU.Runtime;
using IlgpuLlama.Kernels;
using IlgpuLlama.Kernels.Reference;

namespace IlgpuLlama.Tests.Kernels;

/// <summary>Embedding, RMSNorm, RoPE, KV append, SwiGLU, gather and GEMM against their references.</summary>
[Collection(KernelCollection.Name)]
public sealed class LayerKernelTests(KernelTestContext ctx)
{
    [Theory]
    [InlineData("fp16")]
    [InlineData("bf16")]
    public void Embedding_gathers_rows_exactly(string dtype)
    {
        var storage = TestData.Format(dtype);
        var k = ctx.Kernels(4);
        var rng = new Random(3);
        int vocab = 37, hidden = 24;
        var table = TestData.Weights(rng, vocab * hidden, storage, 2.0);
        int[] tokens = [5, 0, 36, 5, 17];
        var expected = new double[tokens.Length * hidden];
        KernelReference.Embedding(table, tokens, expected, hidden, storage);
        var a = k.Accelerator;
        using var tb = a.Allocate1D(table);
        using var tok = a.Allocate1D(tokens);
        using var xb = a.Allocate1D<float>(tokens.Length * hidden);
        k.Embedding(WeightMatrix.Of(storage, tb.View, vocab, hidden), tok.View, xb.View, tokens.Length);
        TestData.AssertClose("embedding", xb.GetAsArray1D(), expected, 0, 0);
    }

    [Theory]
    [InlineData(4, 3, 96, "fp16")]
    [InlineData(4, 1, 344, "bf16")]
    [InlineData(32, 5, 130, "fp16")]
    [InlineData(4, 3, 50, "fp16")] // at most four values per thread: the single-read path
    [InlineData(2, 2, 7, "bf16")]
    [InlineData(1, 2, 7, "bf16")]
    public void RmsNorm_matches_reference(int warp, int rows, int n, string dtype)
    {
        var storage = TestData.Format(dtype);
        var k = ctx.Kernels(warp);
        var rng = new Random(rows * n);
        var x = TestData.Floats(rng, rows * n, 3.0);
        var w = TestData.Weights(rng, n, storage, 1.5);
        var expected = new double[rows * n];
        KernelReference.RmsNorm(x, w, expected, n, 1e-5, storage);
        var a = k.Accelerator;
        using var xb = a.Allocate1D(x);
        using var wb = a.Allocate1D(w);
        using var yb = a.Allocate1D<float>(rows * n);
        k.RmsNorm(xb.View, new WeightVector(storage, wb.View), yb.View, rows, n, 1e-5f);
        TestData.AssertClose("rmsnorm", yb.GetAsArray1D(), expected, 1e-6, 1e-5);
    }

    [Theory]
    [InlineData(6, 2, 16)]
    [InlineData(8, 2, 8)]
    [InlineData(4, 4, 16)]
    public void Rope_and_KvAppend_match_reference(int heads, int kvHeads, int headDim) => RopeAndKvAppend(heads, kvHeads, headDim, KvCacheType.Fp16);

    /// <summary>The append into an fp32 cache: the fp32 bits of k and v, two words each, the rest of the cache untouched.</summary>
    [Theory]
    [InlineData(6, 2, 16)]
    [InlineData(2, 1, 8)]
    public void KvAppend_into_an_fp32_cache_stores_the_values_unrounded(int heads, int kvHeads, int headDim) => RopeAndKvAppend(heads, kvHeads, headDim, KvCacheType.Fp32);

    void RopeAndKvAppend(int heads, int kvHeads, int headDim, KvCacheType type)
    {
        var k = ctx.Kernels(4);
        var rng = new Random(heads + 13 * headDim);
        int tokens = 7, maxSeq = 150, slotCount = 3;
        var rope = RopeTable.Build(TestData.Llama3InverseFrequencies(headDim, 500000, 32, 1, 4, 64), maxSeq);
        var q = TestData.Floats(rng, tokens * heads * headDim);
        var kk = TestData.Floats(rng, tokens * kvHeads * headDim);
        var v = TestData.Floats(rng, tokens * kvHeads * headDim);
        int[] positions = [0, 1, 2, 149, 63, 64, 100];
        int[] slots = [0, 0, 0, 2, 1, 1, 2];
        var eq = Array.ConvertAll(q, f => (double)f);
        var ek = Array.ConvertAll(kk, f => (double)f);
        KernelReference.Rope(eq, ek, positions, rope, heads, kvHeads, headDim);
        var shape = new AttentionShape(heads, kvHeads, headDim, maxSeq, type);
        int cacheValues = slotCount * kvHeads * maxSeq * headDim;
        var kCache = TestData.KvCache(rng, cacheValues, shape.Cache);
        var vCache = TestData.KvCache(rng, cacheValues, shape.Cache);
        var ekc = (ushort[])kCache.Clone();
        var evc = (ushort[])vCache.Clone();
        KernelReference.KvAppend(Array.ConvertAll(ek, d => (float)d), v, ekc, evc, slots, positions, shape.Cache);

        var a = k.Accelerator;
        using var qb = a.Allocate1D(q);
        using var kb = a.Allocate1D(kk);
        using var vb = a.Allocate1D(v);
        using var pb = a.Allocate1D(positions);
        using var sb = a.Allocate1D(slots);
        using var rb = a.Allocate1D(rope);
        using var kcb = a.Allocate1D(kCache);
        using var vcb = a.Allocate1D(vCache);
        k.Rope(qb.View, kb.View, pb.View, rb.View, tokens, shape);
        k.KvAppend(kb.View, vb.View, kcb.View, vcb.View, sb.View, pb.View, tokens, shape.Cache);
        TestData.AssertClose("rope q", qb.GetAsArray1D(), eq, 1e-6, 1e-6);
        TestData.AssertClose("rope k", kb.GetAsArray1D(), ek, 1e-6, 1e-6);
        TestData.AssertClose("k cache", Array.ConvertAll(TestData.KvValues(kcb.GetAsArray1D(), shape.Cache), d => (float)d), TestData.KvValues(ekc, shape.Cache),
            type == KvCacheType.Fp32 ? 1e-6 : 1e-4, 1e-3);
        var gotV = vcb.GetAsArray1D();
        for (int i = 0; i < gotV.Length; i++)
            Assert.True(evc[i] == gotV[i], $"v cache [{i}]: got 0x{gotV[i]:X4}, expected 0x{evc[i]:X4}");
    }

    /// <summary>
    /// K and V beyond the fp16 range saturate at +-65504 in the cache (issue 17): an infinite key
    /// made attention's softmax inf - inf = NaN. Both writers (the prefill append and the fused
    /// decode projection) convert through DeviceMath.ToKvHalfBits; the reference does the same.
    /// </summary>
    [Fact]
    public void KvAppend_saturates_values_beyond_fp16_and_attention_stays_finite()
    {
        var k = ctx.Kernels(4);
        const int heads = 2, kvHeads = 1, headDim = 8, maxSeq = 5;
        float[] row = [70000f, -1e6f, 65504f, 65519f, 65520f, -65520f, 1e30f, 1.5f];
        ushort[] expectedBits = [0x7BFF, 0xFBFF, 0x7BFF, 0x7BFF, 0x7BFF, 0xFBFF, 0x7BFF, 0x3E00];
        var shape = new AttentionShape(heads, kvHeads, headDim, maxSeq);
        int[] slots = [0, 0], positions = [0, 1];
        float[] keys = [.. row, .. Enumerable.Repeat(1f, headDim)];
        float[] values = [.. Enumerable.Repeat(1f, headDim), .. row];
        var refK = new ushort[maxSeq * headDim];
        var refV = new ushort[maxSeq * headDim];
        KernelReference.KvAppend(keys, values, refK, refV, slots, positions, shape.Cache);
        Assert.Equal(expectedBits, refK[..headDim]);
        Assert.Equal(expectedBits, refV[headDim..(2 * headDim)]);

        var a = k.Accelerator;
        using var kb = a.Allocate1D(keys);
        using var vb = a.Allocate1D(values);
        using var sb = a.Allocate1D(slots);
        using var pb = a.Allocate1D(positions);
        using var kcb = a.Allocate1D<ushort>(maxSeq * headDim);
        using var vcb = a.Allocate1D<ushort>(maxSeq * headDim);
        kcb.MemSetToZero();
        vcb.MemSetToZero();
        k.KvAppend(kb.View, vb.View, kcb.View, vcb.View, sb.View, pb.View, 2, shape.Cache);
        Assert.Equal(refK, kcb.GetAsArray1D());
        Assert.Equal(refV, vcb.GetAsArray1D());

        // Attention of one query (position 1) over both cached positions: finite, and equal to the reference.
        var q = Enumerable.Range(0, heads * headDim).Select(i => i % 3 == 0 ? 0.5f : -0.25f).ToArray();
        int[] qSlots = [0], qPositions = [1];
        var expected = new double[heads * headDim];
        KernelReference.Attention(q, refK, refV, qSlots, qPositions, expected, shape);
        Assert.All(expected, e => Assert.True(double.IsFinite(e)));
        using var qb = a.Allocate1D(q);
        using var qsb = a.Allocate1D(qSlots);
        using var qpb = a.Allocate1D(qPositions);
        using var ob = a.Allocate1D<float>(heads * headDim);
        using var accb = a.Allocate1D<float>(heads * 2 * headDim);
        using var mlb = a.Allocate1D<float>(heads * 2 * 2);
        using var cb = a.Allocate1D<int>(kvHeads);
        cb.MemSetToZero();
        k.Attention(new AttentionBuffers(qb.View, kcb.View, vcb.View, qsb.View, qpb.View, ob.View, accb.View, mlb.View, cb.View), 1, 2, shape);
        var got = ob.GetAsArray1D();
        Assert.All(got, g => Assert.True(float.IsFinite(g), $"attention output {g}"));
        TestData.AssertClose("attention over saturated keys and values", got, expected, 1e-2, 1e-4);
    }

    [Fact]
    public void SwiGlu_and_GatherRows_match_reference()
    {
        var k = ctx.Kernels(4);
        var rng = new Random(11);
        int n = 3 * 43;
        var gate = TestData.Floats(rng, n, 4);
        var up = TestData.Floats(rng, n, 2);
        var expected = Array.ConvertAll(gate, f => (double)f);
        KernelReference.SwiGlu(expected, up);
        var a = k.Accelerator;
        using var gb = a.Allocate1D(gate);
        using var ub = a.Allocate1D(up);
        k.SwiGlu(gb.View, ub.View, n);
        TestData.AssertClose("swiglu", gb.GetAsArray1D(), expected, 1e-6, 1e-5);

        int[] rows = [2, 0];
        using var rowsb = a.Allocate1D(rows);
        using var dst = a.Allocate1D<float>(2 * 43);
        k.GatherRows(ub.View, rowsb.View, dst.View, 2, 43);
        var got = dst.GetAsArray1D();
        Assert.Equal(up[(2 * 43)..(3 * 43)], got[..43]);
        Assert.Equal(up[..43], got[43..]);
    }

    [Theory]
    [InlineData(4, 37, 45, 96, false, "fp16")]
    [InlineData(4, 9, 130, 344, true, "bf16")]
    [InlineData(4, 1, 3, 8, false, "fp16")]
    [InlineData(32, 21, 70, 40, true, "fp16")]
    [InlineData(2, 13, 21, 48, true, "bf16")]
    [InlineData(1, 13, 21, 48, true, "bf16")]
    public void Gemm_matches_reference(int warp, int m, int n, int kDim, bool accumulate, string dtype)
    {
        var storage = TestData.Format(dtype);
        var k = ctx.Kernels(warp);
        var rng = new Random(m * n + kDim);
        var x = TestData.Floats(rng, m * kDim);
        var w = TestData.Weights(rng, n * kDim, storage);
        var c0 = TestData.Floats(rng, m * n);
        var expected = Array.ConvertAll(c0, f => (double)f);
        KernelReference.Gemm(x, w, expected, m, n, kDim, accumulate, storage);
        var a = k.Accelerator;
        using var xb = a.Allocate1D(x);
        using var wb = a.Allocate1D(w);
        using var cb = a.Allocate1D(c0);
        k.Gemm(xb.View, WeightMatrix.Of(storage, wb.View, n, kDim), cb.View, m, accumulate);
        TestData.AssertClose("gemm", cb.GetAsArray1D(), expected, 2e-5, 2e-5);
    }
}
