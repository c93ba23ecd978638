using ILGPU;
using ILGPU.Runtime;
using IlgpuLlama.Kernels;
using IlgpuLlama.Kernels.Reference;

namespace IlgpuLlama.Tests.Kernels;

/// <summary>
/// The matvecs with their input's RMSNorm fused (decode variant fused-norm) against the float64
/// composition rmsnorm-then-matvec: raw inputs of magnitude ~3 (so 1/rms matters), odd rows, input
/// lengths that leave tails after the four-chunk loop, every batch width, warps of 2, 4 and 32.
/// </summary>
[Collection(KernelCollection.Name)]
public sealed class FusedNormTests(KernelTestContext ctx)
{
    const double Abs = 2e-5, Rel = 2e-5;
    const float Eps = 1e-5f;

    [Theory]
    [InlineData(4, 37, 96, 1, false, "fp16")]
    [InlineData(4, 37, 104, 3, true, "bf16")]
    [InlineData(4, 517, 96, 4, false, "fp16")]
    [InlineData(32, 19, 200, 2, false, "fp16")]
    [InlineData(32, 7, 1032, 4, true, "bf16")]
    [InlineData(2, 37, 96, 4, false, "fp16")]
    [InlineData(2, 5, 40, 1, true, "bf16")]
    [InlineData(1, 37, 96, 4, false, "fp16")]
    public void MatVec_with_fused_norm_matches_norm_then_matvec(int warp, int rows, int inDim, int batch, bool accumulate, string dtype)
    {
        var format = TestData.Format(dtype);
        var k = ctx.Kernels(warp);
        var rng = new Random(rows * 31 + inDim + batch);
        var w = TestData.Weights(rng, rows * inDim, format);
        var g = TestData.Weights(rng, inDim, format, 1.5);
        var x = TestData.Floats(rng, batch * inDim, 3.0);
        var y0 = TestData.Floats(rng, batch * rows);
        var expected = Array.ConvertAll(y0, v => (double)v);
        KernelReference.MatVec(w, KernelReference.Normed(x, g, inDim, Eps, format), expected, rows, inDim, batch, accumulate, format);

        var a = k.Accelerator;
        using var wb = a.Allocate1D(w);
        using var gb = a.Allocate1D(g);
        using var xb = a.Allocate1D(x);
        using var yb = a.Allocate1D(y0);
        k.MatVec(WeightMatrix.Of(format, wb.View, rows, inDim), xb.View, yb.View, batch, accumulate, norm: new FusedNorm(new WeightVector(format, gb.View), Eps));
        TestData.AssertClose("matvec+norm", yb.GetAsArray1D(), expected, Abs, Rel);
    }

    [Theory]
    [InlineData(4, 43, 96, 3, "fp16")]
    [InlineData(4, 7, 48, 1, "bf16")]
    [InlineData(32, 9, 64, 4, "fp16")]
    [InlineData(2, 9, 72, 2, "bf16")]
    [InlineData(1, 9, 72, 2, "bf16")]
    public void SwiGlu_with_fused_norm_matches_norm_then_swiglu(int warp, int rows, int inDim, int batch, string dtype)
    {
        var format = TestData.Format(dtype);
        var k = ctx.Kernels(warp);
        var rng = new Random(rows + inDim * 17);
        var wg = TestData.Weights(rng, rows * inDim, format);
        var wu = TestData.Weights(rng, rows * inDim, format);
        var g = TestData.Weights(rng, inDim, format, 1.5);
        var x = TestData.Floats(rng, batch * inDim, 3.0);
        var expected = new double[batch * rows];
        KernelReference.MatVecSwiGlu(wg, wu, KernelReference.Normed(x, g, inDim, Eps, format), expected, rows, inDim, batch, format);

        var a = k.Accelerator;
        using var wgb = a.Allocate1D(wg);
        using var wub = a.Allocate1D(wu);
        using var gb = a.Allocate1D(g);
        using var xb = a.Allocate1D(x);
        using var hb = a.Allocate1D<float>(batch * rows);
        k.MatVecSwiGlu(WeightMatrix.Of(format, wgb.View, rows, inDim), WeightMatrix.Of(format, wub.View, rows, inDim), xb.View, hb.View, batch,
            new FusedNorm(new WeightVector(format, gb.View), Eps));
        TestData.AssertClose("swiglu+norm", hb.GetAsArray1D(), expected, Abs, Rel);
    }

    [Theory]
    [InlineData(4, 6, 2, 16, 96, 3, "fp16")]
    [InlineData(4, 8, 2, 8, 40, 2, "bf16")]
    [InlineData(32, 6, 2, 16, 96, 4, "fp16")]
    [InlineData(2, 4, 4, 16, 64, 1, "bf16")]
    [InlineData(1, 4, 4, 16, 64, 1, "bf16")]
    public void QkvRope_with_fused_norm_matches_norm_then_qkv(int warp, int heads, int kvHeads, int headDim, int hidden, int batch, string dtype)
    {
        var format = TestData.Format(dtype);
        var k = ctx.Kernels(warp);
        var rng = new Random(heads * 1000 + kvHeads * 10 + headDim + hidden);
        var shape = new AttentionShape(heads, kvHeads, headDim, 120);
        int qDim = shape.QDim, kvDim = shape.KvDim;
        var rope = RopeTable.Build(TestData.Llama3InverseFrequencies(headDim, 500000, 32, 1, 4, 64), shape.MaxSeq);
        var wq = TestData.Weights(rng, qDim * hidden, format);
        var wk = TestData.Weights(rng, kvDim * hidden, format);
        var wv = TestData.Weights(rng, kvDim * hidden, format);
        var g = TestData.Weights(rng, hidden, format, 1.5);
        var x = TestData.Floats(rng, batch * hidden, 3.0);
        int[] slots = new[] { 2, 0, 3, 1 }[..batch];
        int[] positions = new[] { 119, 0, 33, 5 }[..batch];
        int cacheLen = (int)shape.Cache.Elements(4);
        var kCache = TestData.HalfBits(rng, cacheLen);
        var vCache = TestData.HalfBits(rng, cacheLen);
        var expectedQ = new double[batch * qDim];
        var expectedK = (ushort[])kCache.Clone();
        var expectedV = (ushort[])vCache.Clone();
        KernelReference.MatVecQkvRope(wq, wk, wv, KernelReference.Normed(x, g, hidden, Eps, format), expectedQ, expectedK, expectedV, rope, slots, positions, hidden, batch, shape, format);

        var a = k.Accelerator;
        using var wqb = a.Allocate1D(wq);
        using var wkb = a.Allocate1D(wk);
        using var wvb = a.Allocate1D(wv);
        using var gb = a.Allocate1D(g);
        using var xb = a.Allocate1D(x);
        using var qb = a.Allocate1D<float>(batch * qDim);
        using var kcb = a.Allocate1D(kCache);
        using var vcb = a.Allocate1D(vCache);
        using var ropeb = a.Allocate1D(rope);
        using var slotb = a.Allocate1D(slots);
        using var posb = a.Allocate1D(positions);
        var qkv = new QkvWeights(WeightMatrix.Of(format, wqb.View, qDim, hidden), WeightMatrix.Of(format, wkb.View, kvDim, hidden), WeightMatrix.Of(format, wvb.View, kvDim, hidden));
        k.MatVecQkvRope(qkv, xb.View, qb.View, kcb.View, vcb.View, ropeb.View, slotb.View, posb.View, batch, shape, new FusedNorm(new WeightVector(format, gb.View), Eps));
        TestData.AssertClose("q", qb.GetAsArray1D(), expectedQ, Abs, Rel);
        TestData.AssertClose("k cache", Array.ConvertAll(kcb.GetAsArray1D(), b => (float)KernelReference.HalfToDouble(b)), TestData.HalfToDouble(expectedK), 1e-4, 1e-3);
        TestData.AssertClose("v cache", Array.ConvertAll(vcb.GetAsArray1D(), b => (float)KernelReference.HalfToDouble(b)), TestData.HalfToDouble(expectedV), 1e-4, 1e-3);
    }

    [Fact]
    public void A_fused_norm_must_match_the_matrix_format_and_length()
    {
        var k = ctx.Kernels(4);
        var a = k.Accelerator;
        using var w = a.Allocate1D<ushort>(4 * 16);
        using var g = a.Allocate1D<ushort>(8);
        using var x = a.Allocate1D<float>(16);
        using var y = a.Allocate1D<float>(4);
        var matrix = WeightMatrix.Of(WeightFormat.Fp16, w.View, 4, 16);
        var e = Assert.Throws<ArgumentException>(() => k.MatVec(matrix, x.View, y.View, 1, false, norm: new FusedNorm(new WeightVector(WeightFormat.Fp16, g.View), Eps)));
        Assert.Contains("matvec norm weight", e.Message);
        e = Assert.Throws<ArgumentException>(() => k.MatVec(matrix, x.View, y.View, 1, false, norm: new FusedNorm(new WeightVector(WeightFormat.Bf16, g.View), Eps)));
        Assert.Contains("share a 16-bit format", e.Message);
    }
}
