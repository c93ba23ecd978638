using ILGPU;
using ILGPU.Runtime;
using IlgpuLlama.Kernels;
using IlgpuLlama.Kernels.Reference;

namespace IlgpuLlama.Tests.Kernels;

[Collection(KernelCollection.Name)]
public sealed class MatVecTests(KernelTestContext ctx)
{
    // fp32 accumulation of up to a few hundred products of O(0.5) values against a float64 reference.
    const double Abs = 2e-5, Rel = 2e-5;

    [Theory]
    [InlineData(4, 37, 96, 1, false, "fp16")]
    [InlineData(4, 37, 96, 3, true, "fp16")]
    [InlineData(4, 5, 344, 4, false, "bf16")]
    [InlineData(4, 1, 8, 2, true, "bf16")]
    [InlineData(4, 64, 1032, 3, false, "fp16")]
    [InlineData(32, 19, 200, 2, false, "fp16")]
    [InlineData(2, 37, 96, 4, true, "fp16")]
    [InlineData(1, 37, 96, 4, true, "fp16")]
    public void MatVec_matches_reference(int warp, int rows, int inDim, int batch, bool accumulate, string dtype)
    {
        var storage = TestData.Format(dtype);
        var k = ctx.Kernels(warp);
        var rng = new Random(rows * 7919 + inDim);
        var w = TestData.Weights(rng, rows * inDim, storage);
        var x = TestData.Floats(rng, batch * inDim);
        var y0 = TestData.Floats(rng, batch * rows);
        var expected = Array.ConvertAll(y0, v => (double)v);
        KernelReference.MatVec(w, x, expected, rows, inDim, batch, accumulate, storage);

        var a = k.Accelerator;
        using var wb = a.Allocate1D(w);
        using var xb = a.Allocate1D(x);
        using var yb = a.Allocate1D(y0);
        k.MatVec(WeightMatrix.Of(storage, wb.View, rows, inDim), xb.View, yb.View, batch, accumulate);
        TestData.AssertClose("matvec", yb.GetAsArray1D(), expected, Abs, Rel);
    }

    [Theory]
    [InlineData(4, 43, 96, 3, "fp16")]
    [InlineData(4, 7, 48, 1, "bf16")]
    [InlineData(32, 9, 64, 4, "fp16")]
    [InlineData(2, 9, 64, 3, "bf16")]
    [InlineData(1, 9, 64, 3, "bf16")]
    public void MatVecSwiGlu_matches_reference(int warp, int rows, int inDim, int batch, string dtype)
    {
        var storage = TestData.Format(dtype);
        var k = ctx.Kernels(warp);
        var rng = new Random(rows + inDim * 31);
        var wg = TestData.Weights(rng, rows * inDim, storage);
        var wu = TestData.Weights(rng, rows * inDim, storage);
        var x = TestData.Floats(rng, batch * inDim);
        var expected = new double[batch * rows];
        KernelReference.MatVecSwiGlu(wg, wu, x, expected, rows, inDim, batch, storage);

        var a = k.Accelerator;
        using var wgb = a.Allocate1D(wg);
        using var wub = a.Allocate1D(wu);
        using var xb = a.Allocate1D(x);
        using var hb = a.Allocate1D<float>(batch * rows);
        k.MatVecSwiGlu(WeightMatrix.Of(storage, wgb.View, rows, inDim), WeightMatrix.Of(storage, wub.View, rows, inDim), xb.View, hb.View, batch);
        TestData.AssertClose("matvec-swiglu", hb.GetAsArray1D(), expected, Abs, Rel);
    }

    [Theory]
    [InlineData(4, 6, 2, 16, 96, 3, "fp16")]
    [InlineData(4, 4, 4, 16, 64, 1, "bf16")]
    [InlineData(4, 8, 2, 8, 40, 2, "fp16")]
    [InlineData(32, 6, 2, 16, 96, 4, "bf16")]
    [InlineData(2, 6, 2, 16, 96, 4, "fp16")]
    [InlineData(1, 6, 2, 16, 96, 4, "fp16")]
    [InlineData(4, 6, 2, 16, 96, 3, "bf16", "fp32")]
    [InlineData(2, 8, 2, 8, 40, 2, "fp16", "fp32")]
    public void MatVecQkvRope_matches_reference(int warp, int heads, int kvHeads, int headDim, int hidden, int batch, string dtype, string cacheType = "fp16")
    {
        var type = KvCacheTypes.Parse(cacheType)!.Value;
        var storage = TestData.Format(dtype);
        var k = ctx.Kernels(warp);
        var rng = new Random(heads * 100 + kvHeads * 10 + headDim);
        int qDim = heads * headDim, kvDim = kvHeads * headDim, maxSeq = 300, slotsCount = 5;
        // llama3 scaling with a short original context so high, medium and low frequency bands all occur
        var rope = RopeTable.Build(TestData.Llama3InverseFrequencies(headDim, 500000, 32, 1, 4, 64), maxSeq);
        var wq = TestData.Weights(rng, qDim * hidden, storage);
        var wk = TestData.Weights(rng, kvDim * hidden, storage);
        var wv = TestData.Weights(rng, kvDim * hidden, storage);
        var x = TestData.Floats(rng, batch * hidden);
        int[] slots = new[] { 4, 0, 2, 1 }[..batch];
        int[] positions = new[] { 299, 0, 77, 5 }[..batch];
        var shape = new AttentionShape(heads, kvHeads, headDim, maxSeq, type);
        int values = slotsCount * kvHeads * maxSeq * headDim;
        var kCache = TestData.KvCache(rng, values, shape.Cache);
        var vCache = TestData.KvCache(rng, values, shape.Cache);
        var expectedQ = new double[batch * qDim];
        var expectedK = (ushort[])kCache.Clone();
        var expectedV = (ushort[])vCache.Clone();
        KernelReference.MatVecQkvRope(wq, wk, wv, x, expectedQ, expectedK, expectedV, rope, slots, positions, hidden, batch, shape, storage);

        var a = k.Accelerator;
        using var wqb = a.Allocate1D(wq);
        using var wkb = a.Allocate1D(wk);
        using var wvb = a.Allocate1D(wv);
        using var xb = a.Allocate1D(x);
        using var qb = a.Allocate1D<float>(batch * qDim);
        using var kcb = a.Allocate1D(kCache);
        using var vcb = a.Allocate1D(vCache);
        using var ropeb = a.Allocate1D(rope);
        using var slotb = a.Allocate1D(slots);
        using var posb = a.Allocate1D(positions);
        var qkv = new QkvWeights(WeightMatrix.Of(storage, wqb.View, qDim, hidden), WeightMatrix.Of(storage, wkb.View, kvDim, hidden), WeightMatrix.Of(storage, wvb.View, kvDim, hidden));
        k.MatVecQkvRope(qkv, xb.View, qb.View, kcb.View, vcb.View, ropeb.View, slotb.View, posb.View, batch, shape);
        TestData.AssertClose("q", qb.GetAsArray1D(), expectedQ, Abs, Rel);
        // An fp16 cache: allow one rounding step of difference between the fp32 and float64 paths.
        double cacheAbs = type == KvCacheType.Fp32 ? Abs : 1e-4, cacheRel = type == KvCacheType.Fp32 ? Rel : 1e-3;
        float[] Values(ushort[] words) => Array.ConvertAll(TestData.KvValues(words, shape.Cache), d => (float)d);
        TestData.AssertClose("k cache", Values(kcb.GetAsArray1D()), TestData.KvValues(expectedK, shape.Cache), cacheAbs, cacheRel);
        TestData.AssertClose("v cache", Values(vcb.GetAsArray1D()), TestData.KvValues(expectedV, shape.Cache), cacheAbs, cacheRel);
    }

    /// <summary>
    /// The fused decode projection writes K and V beyond the fp16 range as +-65504, not +-inf
    /// (issue 17). Weights of 1 and inputs of 1000 give k = v = 96,000 at position 0 (no rotation).
    /// </summary>
    [Theory]
    [InlineData(4)]
    [InlineData(2)]
    [InlineData(1)]
    public void MatVecQkvRope_saturates_k_and_v_beyond_fp16(int warp)
    {
        var k = ctx.Kernels(warp);
        const int heads = 2, kvHeads = 1, headDim = 8, hidden = 96, maxSeq = 3;
        var storage = TestData.Format("fp16");
        int qDim = heads * headDim, kvDim = kvHeads * headDim;
        var one = storage.Encode(1f);
        var minusOne = storage.Encode(-1f);
        var wq = Enumerable.Repeat(storage.Encode(0f), qDim * hidden).ToArray();
        var wk = Enumerable.Repeat(one, kvDim * hidden).ToArray();
        var wv = Enumerable.Range(0, kvDim * hidden).Select(i => i / hidden % 2 == 0 ? minusOne : one).ToArray();
        var x = Enumerable.Repeat(1000f, hidden).ToArray();
        var rope = RopeTable.Build(TestData.Llama3InverseFrequencies(headDim, 500000, 32, 1, 4, 64), maxSeq);
        var shape = new AttentionShape(heads, kvHeads, headDim, maxSeq);
        var a = k.Accelerator;
        using var wqb = a.Allocate1D(wq);
        using var wkb = a.Allocate1D(wk);
        using var wvb = a.Allocate1D(wv);
        using var xb = a.Allocate1D(x);
        using var qb = a.Allocate1D<float>(qDim);
        using var kcb = a.Allocate1D<ushort>(maxSeq * kvDim);
        using var vcb = a.Allocate1D<ushort>(maxSeq * kvDim);
        using var ropeb = a.Allocate1D(rope);
        using var slotb = a.Allocate1D(new[] { 0 });
        using var posb = a.Allocate1D(new[] { 0 });
        kcb.MemSetToZero();
        vcb.MemSetToZero();
        var qkv = new QkvWeights(WeightMatrix.Of(storage, wqb.View, qDim, hidden), WeightMatrix.Of(storage, wkb.View, kvDim, hidden), WeightMatrix.Of(storage, wvb.View, kvDim, hidden));
        k.MatVecQkvRope(qkv, xb.View, qb.View, kcb.View, vcb.View, ropeb.View, slotb.View, posb.View, 1, shape);
        Assert.Equal(Enumerable.Repeat((ushort)0x7BFF, kvDim), kcb.GetAsArray1D()[..kvDim]);
        Assert.Equal(Enumerable.Range(0, kvDim).Select(i => (ushort)(i % 2 == 0 ? 0xFBFF : 0x7BFF)), vcb.GetAsArray1D()[..kvDim]);
    }

    [Fact]
    public void MatVec_rejects_bad_shapes_with_clear_errors()
    {
        var k = ctx.Kernels(4);
        var a = k.Accelerator;
        using var w = a.Allocate1D<ushort>(10 * 20);
        using var x = a.Allocate1D<float>(20);
        using var y = a.Allocate1D<float>(10);
        WeightMatrix W(int rows, int cols) => WeightMatrix.Of(WeightFormat.Fp16, w.View, rows, cols);
        var e = Assert.Throws<ArgumentException>(() => k.MatVec(W(10, 20), x.View, y.View, 1, false));
        Assert.Contains("multiple of 8", e.Message);
        e = Assert.Throws<ArgumentException>(() => k.MatVec(W(10, 16), x.View, y.View, 65, false));
        Assert.Contains("batch 65", e.Message);
        e = Assert.Throws<ArgumentException>(() => k.MatVec(W(20, 16), x.View, y.View, 1, false));
        Assert.Contains("matvec weight", e.Message);
    }
}
