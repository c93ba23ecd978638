using ILGPU;
using ILGPU.Runtime;
using IlgpuLlama.Kernels;
using IlgpuLlama.Kernels.Reference;
using IlgpuLlama.Tests.Kernels;

namespace IlgpuLlama.Tests.Quantization;

/// <summary>
/// The kernels that read Q8_0, Q4_0 and the K-quants (Q4_K, Q5_K, Q6_K) against the float64 references on the dequantised
/// values (ggml's definitions): every decode matvec form (plain, residual, norm fused, SwiGLU, q/k/v +
/// RoPE + KV append), the embedding gather and the prefill GEMM, at warps 2, 4 and 32, on odd row
/// counts and input lengths that leave tails after the four-chunk loop.
/// </summary>
[Collection(KernelCollection.Name)]
public sealed class QuantizedKernelTests(KernelTestContext ctx)
{
    // fp32 accumulation of up to ~1000 products against float64 on the same dequantised weights.
    const double Abs = 3e-5, Rel = 3e-5;
    const float Eps = 1e-5f;

    static BlockQuantFormat Format(string name) => (BlockQuantFormat)WeightFormat.Parse(name);

    /// <summary>A quantised random matrix in host memory and on the device.</summary>
    sealed class DeviceMatrix : IDisposable
    {
        readonly MemoryBuffer1D<byte, Stride1D.Dense> quants;
        readonly MemoryBuffer1D<ushort, Stride1D.Dense> scales;

        public DeviceMatrix(Accelerator a, Random rng, BlockQuantFormat f, int rows, int cols, double scale = 0.5)
        {
            var values = TestData.Floats(rng, rows * cols, scale);
            Host = HostMatrix.From(f, values, rows, cols);
            quants = a.Allocate1D(Host.Quants!);
            scales = a.Allocate1D(Host.Scales!);
            Matrix = WeightMatrix.Quantized(f, quants.View, scales.View, rows, cols);
        }

        public HostMatrix Host { get; }
        public WeightMatrix Matrix { get; }

        public void Dispose()
        {
            quants.Dispose();
            scales.Dispose();
        }
    }

    [Theory]
    [InlineData(4, 37, 96, 1, false, false, "q8_0")]
    [InlineData(4, 37, 160, 3, true, false, "q4_0")]
    [InlineData(4, 9, 1056, 4, false, true, "q8_0")]
    [InlineData(32, 19, 224, 2, false, false, "q4_0")]
    [InlineData(32, 7, 96, 4, true, true, "q4_0")]
    [InlineData(2, 37, 96, 4, true, false, "q8_0")]
    [InlineData(2, 5, 352, 1, false, true, "q4_0")]
    [InlineData(1, 37, 96, 4, true, false, "q8_0")]
    [InlineData(4, 37, 512, 1, false, false, "q4_k")]
    [InlineData(4, 9, 768, 3, true, true, "q5_k")]
    [InlineData(32, 19, 256, 2, false, true, "q6_k")]
    [InlineData(2, 7, 512, 4, true, false, "q6_k")]
    [InlineData(1, 37, 256, 4, false, true, "q4_k")]
    [InlineData(2, 5, 512, 2, false, false, "q5_k")]
    [InlineData(32, 7, 512, 1, true, false, "q4_k")]
    [InlineData(1, 9, 768, 2, true, true, "q6_k")]
    public void MatVec_reads_block_formats(int warp, int rows, int inDim, int batch, bool accumulate, bool norm, string dtype)
    {
        var f = Format(dtype);
        var k = ctx.Kernels(warp);
        var a = k.Accelerator;
        var rng = new Random(rows * 131 + inDim + batch);
        using var w = new DeviceMatrix(a, rng, f, rows, inDim);
        var g = TestData.Weights(rng, inDim, WeightFormat.Fp16, 1.5);
        var x = TestData.Floats(rng, batch * inDim, norm ? 3.0 : 1.0);
        var y0 = TestData.Floats(rng, batch * rows);
        var expected = Array.ConvertAll(y0, v => (double)v);
        var input = norm ? KernelReference.Normed(x, g, inDim, Eps, WeightFormat.Fp16) : Array.ConvertAll(x, v => (double)v);
        KernelReference.MatVec(w.Host, input, expected, batch, accumulate);

        using var gb = a.Allocate1D(g);
        using var xb = a.Allocate1D(x);
        using var yb = a.Allocate1D(y0);
        k.MatVec(w.Matrix, xb.View, yb.View, batch, accumulate, norm: norm ? new FusedNorm(new WeightVector(WeightFormat.Fp16, gb.View), Eps) : null);
        TestData.AssertClose($"matvec {dtype}", yb.GetAsArray1D(), expected, Abs, Rel);
    }

    [Theory]
    [InlineData(4, 43, 96, 3, false, "q8_0")]
    [InlineData(4, 11, 128, 1, true, "q4_0")]
    [InlineData(32, 9, 64, 4, true, "q8_0")]
    [InlineData(2, 9, 96, 2, false, "q4_0")]
    [InlineData(1, 9, 96, 2, false, "q4_0")]
    [InlineData(4, 11, 256, 2, true, "q4_k")]
    [InlineData(2, 9, 512, 1, false, "q6_k")]
    [InlineData(32, 9, 256, 4, true, "q5_k")]
    [InlineData(1, 7, 256, 3, false, "q4_k")]
    public void SwiGlu_reads_block_formats(int warp, int rows, int inDim, int batch, bool norm, string dtype)
    {
        var f = Format(dtype);
        var k = ctx.Kernels(warp);
        var a = k.Accelerator;
        var rng = new Random(rows + inDim * 7 + batch);
        using var wg = new DeviceMatrix(a, rng, f, rows, inDim);
        using var wu = new DeviceMatrix(a, rng, f, rows, inDim);
        var g = TestData.Weights(rng, inDim, WeightFormat.Fp16, 1.5);
        var x = TestData.Floats(rng, batch * inDim, norm ? 3.0 : 1.0);
        var expected = new double[batch * rows];
        var input = norm ? KernelReference.Normed(x, g, inDim, Eps, WeightFormat.Fp16) : Array.ConvertAll(x, v => (double)v);
        KernelReference.MatVecSwiGlu(wg.Host, wu.Host, input, expected, batch);

        using var gb = a.Allocate1D(g);
        using var xb = a.Allocate1D(x);
        using var hb = a.Allocate1D<float>(batch * rows);
        k.MatVecSwiGlu(wg.Matrix, wu.Matrix, xb.View, hb.View, batch, norm ? new FusedNorm(new WeightVector(WeightFormat.Fp16, gb.View), Eps) : null);
        TestData.AssertClose($"swiglu {dtype}", hb.GetAsArray1D(), expected, Abs, Rel);
    }

    [Theory]
    [InlineData(4, 6, 2, 16, 96, 3, false, "q8_0")]
    [InlineData(4, 8, 2, 8, 64, 2, true, "q4_0")]
    [InlineData(32, 6, 2, 16, 96, 4, true, "q8_0")]
    [InlineData(2, 4, 4, 16, 128, 1, false, "q4_0")]
    [InlineData(1, 4, 4, 16, 128, 1, false, "q4_0")]
    [InlineData(4, 6, 2, 16, 256, 3, true, "q4_k")]
    [InlineData(2, 4, 4, 16, 256, 2, false, "q6_k")]
    [InlineData(32, 4, 2, 16, 512, 1, true, "q5_k")]
    [InlineData(1, 4, 2, 16, 256, 4, false, "q6_k")]
    public void QkvRope_reads_block_formats(int warp, int heads, int kvHeads, int headDim, int hidden, int batch, bool norm, string dtype)
    {
        var f = Format(dtype);
        var k = ctx.Kernels(warp);
        var a = k.Accelerator;
        var rng = new Random(heads * 100 + kvHeads + headDim + hidden);
        var shape = new AttentionShape(heads, kvHeads, headDim, 50);
        var rope = RopeTable.Build(TestData.Llama3InverseFrequencies(headDim, 500000, 32, 1, 4, 64), shape.MaxSeq);
        using var wq = new DeviceMatrix(a, rng, f, shape.QDim, hidden);
        using var wk = new DeviceMatrix(a, rng, f, shape.KvDim, hidden);
        using var wv = new DeviceMatrix(a, rng, f, shape.KvDim, hidden);
        var g = TestData.Weights(rng, hidden, WeightFormat.Fp16, 1.5);
        var x = TestData.Floats(rng, batch * hidden, norm ? 3.0 : 1.0);
        int[] slots = new[] { 1, 0, 2, 3 }[..batch];
        int[] positions = new[] { 49, 0, 17, 5 }[..batch];
        int cacheLen = (int)shape.Cache.Elements(4);
        var kCache = TestData.HalfBits(rng, cacheLen);
        var vCache = TestData.HalfBits(rng, cacheLen);
        var expectedQ = new double[batch * shape.QDim];
        var expectedK = (ushort[])kCache.Clone();
        var expectedV = (ushort[])vCache.Clone();
        var input = norm ? KernelReference.Normed(x, g, hidden, Eps, WeightFormat.Fp16) : Array.ConvertAll(x, v => (double)v);
        KernelReference.MatVecQkvRope(wq.Host, wk.Host, wv.Host, input, expectedQ, expectedK, expectedV, rope, slots, positions, batch, shape);

        using var gb = a.Allocate1D(g);
        using var xb = a.Allocate1D(x);
        using var qb = a.Allocate1D<float>(batch * shape.QDim);
        using var kcb = a.Allocate1D(kCache);
        using var vcb = a.Allocate1D(vCache);
        using var ropeb = a.Allocate1D(rope);
        using var slotb = a.Allocate1D(slots);
        using var posb = a.Allocate1D(positions);
        k.MatVecQkvRope(new QkvWeights(wq.Matrix, wk.Matrix, wv.Matrix), xb.View, qb.View, kcb.View, vcb.View, ropeb.View, slotb.View, posb.View, batch, shape,
            norm ? new FusedNorm(new WeightVector(WeightFormat.Fp16, gb.View), Eps) : null);
        TestData.AssertClose("q", qb.GetAsArray1D(), expectedQ, Abs, Rel);
        TestData.AssertClose("k cache", Array.ConvertAll(kcb.GetAsArray1D(), b => (float)KernelReference.HalfToDouble(b)), TestData.HalfToDouble(expectedK), 1e-4, 1e-3);
        TestData.AssertClose("v cache", Array.ConvertAll(vcb.GetAsArray1D(), b => (float)KernelReference.HalfToDouble(b)), TestData.HalfToDouble(expectedV), 1e-4, 1e-3);
    }

    [Theory]
    [InlineData(4, "q8_0")]
    [InlineData(4, "q4_0")]
    [InlineData(2, "q4_0")]
    [InlineData(1, "q4_0")]
    [InlineData(4, "q4_k")]
    [InlineData(2, "q5_k")]
    [InlineData(1, "q6_k")]
    [InlineData(32, "q6_k")]
    public void Embedding_gathers_dequantised_rows_exactly(int warp, string dtype)
    {
        var f = Format(dtype);
        var k = ctx.Kernels(warp);
        var a = k.Accelerator;
        var rng = new Random(17);
        int vocab = 37, hidden = f.BlockSize == 32 ? 96 : 2 * f.BlockSize;
        using var table = new DeviceMatrix(a, rng, f, vocab, hidden, 2.0);
        int[] tokens = [5, 0, 36, 5, 17];
        var expected = new double[tokens.Length * hidden];
        KernelReference.Embedding(table.Host, tokens, expected);
        using var tok = a.Allocate1D(tokens);
        using var xb = a.Allocate1D<float>(tokens.Length * hidden);
        k.Embedding(table.Matrix, tok.View, xb.View, tokens.Length);
        TestData.AssertClose($"embedding {dtype}", xb.GetAsArray1D(), expected, 0, 0);
    }

    [Theory]
    [InlineData(4, 37, 45, 96, false, "q8_0")]
    [InlineData(4, 9, 70, 160, true, "q4_0")]
    [InlineData(32, 21, 70, 64, true, "q8_0")]
    [InlineData(2, 13, 21, 96, false, "q4_0")]
    [InlineData(1, 13, 21, 96, false, "q4_0")]
    [InlineData(4, 13, 21, 512, true, "q4_k")]
    [InlineData(2, 9, 37, 256, false, "q5_k")]
    [InlineData(32, 21, 70, 256, true, "q6_k")]
    [InlineData(1, 13, 21, 256, false, "q6_k")]
    public void Gemm_dequantises_tiles(int warp, int m, int n, int kDim, bool accumulate, string dtype)
    {
        var f = Format(dtype);
        var k = ctx.Kernels(warp);
        var a = k.Accelerator;
        var rng = new Random(m * n + kDim);
        var x = TestData.Floats(rng, m * kDim);
        using var w = new DeviceMatrix(a, rng, f, n, kDim);
        var c0 = TestData.Floats(rng, m * n);
        var expected = Array.ConvertAll(c0, v => (double)v);
        KernelReference.Gemm(x, w.Host, expected, m, accumulate);
        using var xb = a.Allocate1D(x);
        using var cb = a.Allocate1D(c0);
        k.Gemm(xb.View, w.Matrix, cb.View, m, accumulate);
        TestData.AssertClose($"gemm {dtype}", cb.GetAsArray1D(), expected, 2e-5, 2e-5);
    }

    [Fact]
    public void A_block_format_needs_whole_blocks()
    {
        var k = ctx.Kernels(4);
        var a = k.Accelerator;
        using var q = a.Allocate1D<byte>(4 * 48);
        using var s = a.Allocate1D<ushort>(8);
        using var x = a.Allocate1D<float>(48);
        using var y = a.Allocate1D<float>(4);
        var e = Assert.Throws<ArgumentException>(() => k.MatVec(WeightMatrix.Quantized(WeightFormat.Q8_0, q.View, s.View, 4, 48), x.View, y.View, 1, false));
        Assert.Contains("multiple of 32", e.Message);
        e = Assert.Throws<ArgumentException>(() => k.MatVec(WeightMatrix.Quantized(WeightFormat.Q8_0, q.View, s.View, 8, 32), x.View, y.View, 1, false));
        Assert.Contains("matvec weight", e.Message);
    }
}
