using IlgpuLlama.Kernels.Reference;

namespace IlgpuLlama.Kernels.Bench;

/// <summary>
/// The precise family's validated benchmark cases: the float64-accumulating matmul (decode and
/// prefill shapes, a residual add, an input count that leaves a partial tile of four) and RMSNorm.
/// Both round once to fp32, so they are checked to one fp32 rounding of the float64 reference.
/// </summary>
sealed class PreciseBenchCases : FamilyBenchCases
{
    public override string Family => PreciseKernels.Family;

    public override IEnumerable<BenchCase> BenchCases(BenchShapes s, SixteenBitFormat f) =>
        MatMulCases(s, f).Concat(new[] { 1, 4, s.PrefillTokens }.Select(rows => RmsNorm(f, rows, s.Hidden)));

    /// <summary>The matmul with Q8_0/Q4_0 and K-quant matrices (dequantised 16 weights at a time, as the GEMM stages them).</summary>
    public override IEnumerable<BenchCase> BlockBenchCases(BenchShapes s, BlockQuantFormat f) => MatMulCases(s.WithWholeBlocks(f.BlockSize), f);

    static IEnumerable<BenchCase> MatMulCases(BenchShapes s, WeightFormat f)
    {
        yield return MatMul(f, 1, s.Hidden, s.Hidden, false, "q/o proj, decode");
        yield return MatMul(f, 6, s.Hidden, s.Intermediate, true, "down proj + residual");
        yield return MatMul(f, s.GemmTokens[^1], s.Intermediate, s.Hidden, false, "gate/up proj, prefill");
        yield return GemmBenchCases.Gemm(f, s.GemmTokens[^1], s.Intermediate, s.Hidden, "gate/up proj, prefill", PreciseKernels.GemmKernel, PreciseKernels.Family,
            Tolerance.Float64Accumulated, (kernels, x, w, c, rows) => kernels.GemmF64(x, w, c, rows, false));
    }

    static BenchCase MatMul(WeightFormat f, int m, int n, int k, bool accumulate, string label) =>
        new($"matmul_f64_{f.Name}", PreciseKernels.Family, $"M={m} {n}x{k} {label}", m, PreciseKernels.MatMulBytesMoved(f, m, n, k, accumulate), PreciseKernels.MatMulFlops(m, n, k), ctx =>
        {
            int seed = ctx.SeedOf(21, m, n, k);
            var x = HostData.Floats(seed, (long)m * k);
            var w = HostData.Matrix(seed + 1, n, k, f);
            var residual = HostData.Floats(seed + 2, (long)m * n);
            int copies = ctx.CopiesFor(f.MatrixBytes(n, k));
            var xb = ctx.Upload("bench.matmul_f64.x", x);
            var wb = ctx.Rotated("bench.matmul_f64.w", w, copies);
            var yb = ctx.Upload("bench.matmul_f64.y", residual);
            void Launch(int i) => ctx.Kernels.MatMulF64(xb, wb.Copy(i), yb, m, accumulate);

            Validation Validate()
            {
                HostCopy.Upload(yb, residual);
                Launch(0);
                var expected = accumulate ? Array.ConvertAll(residual, v => (double)v) : new double[(long)m * n];
                KernelReference.Gemm(x, w, expected, m, accumulate);
                return Validation.From(HostData.RowsMethod(m, m, "tokens"), Tolerance.Float64Accumulated,
                    Tolerance.Float64Accumulated.Check("matmul_f64", BenchContext.Read(yb), expected));
            }

            return new PreparedCase(copies, Validate, Launch);
        });

    static BenchCase RmsNorm(SixteenBitFormat f, int rows, int n) =>
        RmsNormBenchCases.RmsNorm(f, rows, n, PreciseKernels.RmsNormKernel, PreciseKernels.Family, 22, 1e-5, Tolerance.Float64Accumulated,
            (kernels, x, w, y, eps) => kernels.RmsNormF64(x, w, y, rows, n, eps));
}
