using ILGPU;
using ILGPU.Runtime;
using IlgpuLlama.Kernels;
using IlgpuLlama.Kernels.Reference;

namespace IlgpuLlama.Tests.Kernels;

/// <summary>
/// Decode matvecs over batches wider than one kernel tile (5..64 vectors): one launch loops over
/// tiles of 4 vectors, the last partial; its padding rows are read (they hold NaN here) but neither
/// they nor anything past the batch is written, and every output row equals the float64 reference.
/// </summary>
[Collection(KernelCollection.Name)]
public sealed class WideBatchKernelTests(KernelTestContext ctx)
{
    const double Abs = 3e-5, Rel = 3e-5;
    const float Eps = 1e-5f;

    /// <summary>Inputs of <paramref name="batch"/> rows padded with NaN rows to whole tiles.</summary>
    static float[] Padded(float[] x, int batch, int inDim)
    {
        var p = new float[MatVecKernels.PaddedBatch(batch) * inDim];
        Array.Fill(p, float.NaN);
        Array.Copy(x, p, batch * inDim);
        return p;
    }

    [Theory]
    [InlineData(4, 37, 96, 6, false, false, "fp16")]
    [InlineData(2, 9, 64, 9, true, false, "bf16")]
    [InlineData(32, 19, 96, 5, false, true, "q8_0")]
    [InlineData(4, 7, 64, 13, true, true, "q4_0")]
    [InlineData(1, 9, 64, 9, true, false, "bf16")]
    public void MatVec_over_tiles_matches_reference_and_writes_only_the_batch(int warp, int rows, int inDim, int batch, bool accumulate, bool norm, string dtype)
    {
        var f = WeightFormat.Parse(dtype);
        var k = ctx.Kernels(warp);
        var a = k.Accelerator;
        var rng = new Random(rows * 17 + batch);
        var w = HostMatrix.From(f, TestData.Floats(rng, rows * inDim, 0.5), rows, inDim);
        var g = TestData.Weights(rng, inDim, f.VectorFormat, 1.5);
        var x = TestData.Floats(rng, batch * inDim, norm ? 3.0 : 1.0);
        // One sentinel row past the batch.
        var y0 = TestData.Floats(rng, (batch + 1) * rows);
        var expected = Array.ConvertAll(y0, v => (double)v);
        var input = norm ? KernelReference.Normed(x, g, inDim, Eps, f.VectorFormat) : Array.ConvertAll(x, v => (double)v);
        var head = new double[batch * rows];
        Array.Copy(expected, head, head.Length);
        KernelReference.MatVec(w, input, head, batch, accumulate);
        Array.Copy(head, expected, head.Length);

        using var wv = a.Allocate1D(w.Values ?? [0]);
        using var wq = a.Allocate1D(w.Quants ?? [0]);
        using var ws = a.Allocate1D(w.Scales ?? [0]);
        var matrix = f is BlockQuantFormat q ? WeightMatrix.Quantized(q, wq.View, ws.View, rows, inDim) : WeightMatrix.Of((SixteenBitFormat)f, wv.View, rows, inDim);
        using var gb = a.Allocate1D(g);
        using var xb = a.Allocate1D(Padded(x, batch, inDim));
        using var yb = a.Allocate1D(y0);
        k.MatVec(matrix, xb.View, yb.View, batch, accumulate, norm: norm ? new FusedNorm(new WeightVector(f.VectorFormat, gb.View), Eps) : null);
        TestData.AssertClose($"matvec {dtype} batch {batch}", yb.GetAsArray1D(), expected, Abs, Rel);
    }

    [Theory]
    [InlineData(4, 11, 96, 7, "fp16")]
    [InlineData(32, 9, 64, 10, "q8_0")]
    [InlineData(1, 11, 96, 7, "fp16")]
    public void SwiGlu_over_tiles_matches_reference(int warp, int rows, int inDim, int batch, string dtype)
    {
        var f = WeightFormat.Parse(dtype);
        var k = ctx.Kernels(warp);
        var a = k.Accelerator;
        var rng = new Random(rows + batch * 5);
        var wg = HostMatrix.From(f, TestData.Floats(rng, rows * inDim, 0.5), rows, inDim);
        var wu = HostMatrix.From(f, TestData.Floats(rng, rows * inDim, 0.5), rows, inDim);
        var x = TestData.Floats(rng, batch * inDim);
        var expected = new double[(batch + 1) * rows];
        var head = new double[batch * rows];
        KernelReference.MatVecSwiGlu(wg, wu, Array.ConvertAll(x, v => (double)v), head, batch);
        Array.Copy(head, expected, head.Length);

        using var gv = a.Allocate1D(wg.Values ?? [0]);
        using var gq = a.Allocate1D(wg.Quants ?? [0]);
        using var gs = a.Allocate1D(wg.Scales ?? [0]);
        using var uv = a.Allocate1D(wu.Values ?? [0]);
        using var uq = a.Allocate1D(wu.Quants ?? [0]);
        using var us = a.Allocate1D(wu.Scales ?? [0]);
        WeightMatrix M(HostMatrix h, MemoryBuffer1D<ushort, Stride1D.Dense> v, MemoryBuffer1D<byte, Stride1D.Dense> qb, MemoryBuffer1D<ushort, Stride1D.Dense> s) =>
            f is BlockQuantFormat q ? WeightMatrix.Quantized(q, qb.View, s.View, rows, inDim) : WeightMatrix.Of((SixteenBitFormat)f, v.View, rows, inDim);
        using var xb = a.Allocate1D(Padded(x, batch, inDim));
        using var hb = a.Allocate1D(new float[(batch + 1) * rows]);
        k.MatVecSwiGlu(M(wg, gv, gq, gs), M(wu, uv, uq, us), xb.View, hb.View, batch);
        TestData.AssertClose($"swiglu {dtype} batch {batch}", hb.GetAsArray1D(), expected, Abs, Rel);
    }

    [Fact]
    public void A_batch_input_without_whole_tiles_is_refused()
    {
        var k = ctx.Kernels(4);
        var a = k.Accelerator;
        using var w = a.Allocate1D<ushort>(8 * 16);
        using var x = a.Allocate1D<float>(6 * 16);
        using var y = a.Allocate1D<float>(6 * 8);
        var e = Assert.ThrowsAny<ArgumentException>(() => k.MatVec(WeightMatrix.Of(WeightFormat.Fp16, w.View, 8, 16), x.View, y.View, 6, false));
        Assert.Contains("whole tiles of 4 rows", e.Message);
        Assert.Contains("between 1 and 64", Assert.ThrowsAny<ArgumentException>(() => k.MatVec(WeightMatrix.Of(WeightFormat.Fp16, w.View, 8, 16), x.View, y.View, 65, false)).Message);
    }
}
