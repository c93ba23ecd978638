using ILGPU;
using ILGPU.Runtime;
using IlgpuLlama.Kernels;
using IlgpuLlama.Kernels.Reference;

namespace IlgpuLlama.Tests.Kernels;

/// <summary>
/// The float64-accumulating kernels (<see cref="PreciseKernels"/>) against the float64 references:
/// one fp32 rounding of the exact result, for every weight format, at warps 1, 2, 4 and 32, with
/// input counts that leave partial tiles of four and rows of 8 x odd weights.
/// </summary>
[Collection(KernelCollection.Name)]
public sealed class PreciseKernelTests(KernelTestContext ctx)
{
    /// <summary>One fp32 rounding (2^-24 relative) with room for the float64 sums.</summary>
    const double Rel = 1.2e-7, Abs = 1e-12;

    /// <summary>
    /// matmul_f64 (one warp per weight row) and gemm_f64 (the prefill GEMM's tiles with float64 sums):
    /// one fp32 rounding of the float64 product; M beyond a tile of four inputs or a GEMM tile, K a
    /// multiple of 8 only.
    /// </summary>
    [Theory]
    [InlineData("matmul", 1, 1, 37, 344, false, "bf16")]
    [InlineData("matmul", 1, 9, 21, 48, true, "fp16")]
    [InlineData("matmul", 2, 5, 13, 40, true, "bf16")]
    [InlineData("matmul", 4, 6, 19, 344, false, "fp16")]
    [InlineData("matmul", 32, 7, 9, 520, true, "bf16")]
    [InlineData("matmul", 1, 5, 13, 96, true, "q8_0")]
    [InlineData("matmul", 4, 3, 11, 160, false, "q4_0")]
    [InlineData("matmul", 32, 6, 9, 96, true, "q4_0")]
    [InlineData("matmul", 1, 5, 7, 512, false, "q4_k")]
    [InlineData("matmul", 2, 3, 5, 256, true, "q5_k")]
    [InlineData("matmul", 4, 9, 7, 256, false, "q6_k")]
    [InlineData("gemm", 4, 70, 37, 344, true, "bf16")]
    [InlineData("gemm", 1, 13, 21, 48, false, "fp16")]
    [InlineData("gemm", 32, 9, 70, 96, true, "q8_0")]
    [InlineData("gemm", 2, 13, 9, 256, false, "q4_k")]
    [InlineData("gemm", 4, 5, 11, 160, true, "q4_0")]
    public void Float64_matmuls_are_one_rounding_of_the_float64_product(string kernel, int warp, int m, int n, int kDim, bool accumulate, string dtype)
    {
        var k = ctx.Kernels(warp);
        var a = k.Accelerator;
        var rng = new Random(m * n + kDim);
        var x = TestData.Floats(rng, m * kDim, 3.0);
        var host = HostMatrix.From(WeightFormat.Parse(dtype), TestData.Floats(rng, n * kDim), n, kDim);
        var y0 = TestData.Floats(rng, m * n);
        var expected = Array.ConvertAll(y0, v => (double)v);
        KernelReference.Gemm(x, host, expected, m, accumulate);
        using var matrix = DeviceMatrix.Upload(a, host);
        using var xb = a.Allocate1D(x);
        using var yb = a.Allocate1D(y0);
        if (kernel == "gemm")
            k.GemmF64(xb.View, matrix.Matrix, yb.View, m, accumulate);
        else
            k.MatMulF64(xb.View, matrix.Matrix, yb.View, m, accumulate);
        TestData.AssertClose($"{kernel}_f64 {dtype}", yb.GetAsArray1D(), expected, Abs, Rel);
    }

    /// <summary>Groups of several warps (the GPU's four; here two and three of four lanes), a warp per row, rows that leave the last group part empty.</summary>
    [Theory]
    [InlineData(2, 7, "bf16")]
    [InlineData(3, 11, "q8_0")]
    public void MatMul_with_several_warps_per_group_covers_every_row(int warpsPerGroup, int n, string dtype)
    {
        var a = ctx.Warp4;
        var k = new LlamaKernels(a, KernelTuning.For(a) with { PreciseGroup = warpsPerGroup * a.WarpSize });
        const int m = 5, kDim = 96;
        var rng = new Random(n);
        var x = TestData.Floats(rng, m * kDim, 3.0);
        var host = HostMatrix.From(WeightFormat.Parse(dtype), TestData.Floats(rng, n * kDim), n, kDim);
        var expected = new double[m * n];
        KernelReference.Gemm(x, host, expected, m, false);
        using var matrix = DeviceMatrix.Upload(a, host);
        using var xb = a.Allocate1D(x);
        using var yb = a.Allocate1D<float>(m * n);
        k.MatMulF64(xb.View, matrix.Matrix, yb.View, m, false);
        TestData.AssertClose($"matmul_f64 {dtype}, {warpsPerGroup} warps per group", yb.GetAsArray1D(), expected, Abs, Rel);
    }

    /// <summary>
    /// A sum fp32 cannot hold: 2^24 + 1 + ... + 1 - 2^24 is 0 when accumulated in fp32 in order (each
    /// 1 is lost against 2^24), and exactly the number of ones in float64, whatever the lane order.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(4)]
    [InlineData(32)]
    public void MatMul_and_gemm_keep_what_fp32_sums_lose(int warp)
    {
        var k = ctx.Kernels(warp);
        var a = k.Accelerator;
        const int kDim = 64;
        var x = new float[kDim];
        x[0] = 1 << 24;
        x[kDim - 1] = -(1 << 24);
        for (int i = 1; i < kDim - 1; i++)
            x[i] = 1;
        var one = WeightFormat.Bf16.Encode(1.0);
        var w = Enumerable.Repeat(one, 2 * kDim).ToArray();
        using var xb = a.Allocate1D(x);
        using var wb = a.Allocate1D(w);
        using var yb = a.Allocate1D<float>(2);
        k.MatMulF64(xb.View, WeightMatrix.Of(WeightFormat.Bf16, wb.View, 2, kDim), yb.View, 1, false);
        Assert.Equal([kDim - 2, kDim - 2], yb.GetAsArray1D());
        // The float64 GEMM too; the fp32 one, summing in order along K per output, loses every 1 against 2^24.
        k.GemmF64(xb.View, WeightMatrix.Of(WeightFormat.Bf16, wb.View, 2, kDim), yb.View, 1, false);
        Assert.Equal([kDim - 2, kDim - 2], yb.GetAsArray1D());
        k.Gemm(xb.View, WeightMatrix.Of(WeightFormat.Bf16, wb.View, 2, kDim), yb.View, 1, false);
        Assert.Equal([0f, 0f], yb.GetAsArray1D());
    }

    [Theory]
    [InlineData(1, 3, 344, "bf16")]
    [InlineData(4, 5, 96, "fp16")]
    [InlineData(32, 2, 1000, "bf16")]
    public void RmsNorm_is_one_rounding_of_the_float64_norm(int warp, int rows, int n, string dtype)
    {
        var f = TestData.Format(dtype);
        var k = ctx.Kernels(warp);
        var a = k.Accelerator;
        var rng = new Random(rows * n);
        var x = TestData.Floats(rng, rows * n, 3.0);
        var w = TestData.Weights(rng, n, f, 1.5);
        var expected = new double[rows * n];
        KernelReference.RmsNorm(x, w, expected, n, 1e-5, f);
        using var xb = a.Allocate1D(x);
        using var wb = a.Allocate1D(w);
        using var yb = a.Allocate1D<float>(rows * n);
        k.RmsNormF64(xb.View, new WeightVector(f, wb.View), yb.View, rows, n, 1e-5);
        TestData.AssertClose($"rmsnorm_f64 {dtype}", yb.GetAsArray1D(), expected, Abs, Rel);
    }

    /// <summary>A host matrix of any format on the device.</summary>
    sealed class DeviceMatrix(WeightMatrix matrix, params IDisposable[] buffers) : IDisposable
    {
        public WeightMatrix Matrix => matrix;

        public static DeviceMatrix Upload(Accelerator a, HostMatrix host)
        {
            if (host.Format is SixteenBitFormat s)
            {
                var values = a.Allocate1D(host.Values!);
                return new DeviceMatrix(WeightMatrix.Of(s, values.View, host.Rows, host.Cols), values);
            }
            var quants = a.Allocate1D(host.Quants!);
            var scales = a.Allocate1D(host.Scales!);
            return new DeviceMatrix(WeightMatrix.Quantized((BlockQuantFormat)host.Format, quants.View, scales.View, host.Rows, host.Cols), quants, scales);
        }

        public void Dispose()
        {
            foreach (var b in buffers)
                b.Dispose();
        }
    }
}
