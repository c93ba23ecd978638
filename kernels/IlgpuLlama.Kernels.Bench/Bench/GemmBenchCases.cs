using IlgpuLlama.Kernels.Reference;

namespace IlgpuLlama.Kernels.Bench;

/// <summary>The gemm family's validated benchmark cases.</summary>
sealed class GemmBenchCases : FamilyBenchCases
{
    /// <summary>GEMM rows (tokens) checked when sampling.</summary>
    const int SampledGemmRows = 8;

    public override string Family => GemmKernels.Family;

    public override IEnumerable<BenchCase> BenchCases(BenchShapes s, SixteenBitFormat f) => Cases(s, f);

    /// <summary>The same cases with Q8_0/Q4_0 matrices (tiles dequantised into shared memory).</summary>
    public override IEnumerable<BenchCase> BlockBenchCases(BenchShapes s, BlockQuantFormat f) => Cases(s.WithWholeBlocks(f.BlockSize), f);

    static IEnumerable<BenchCase> Cases(BenchShapes s, WeightFormat f)
    {
        foreach (int m in s.GemmTokens)
        {
            yield return Gemm(f, m, s.Hidden, s.Hidden, "q/o proj");
            yield return Gemm(f, m, s.Intermediate, s.Hidden, "gate/up proj");
        }
    }

    static BenchCase Gemm(WeightFormat f, int m, int n, int k, string label) =>
        Gemm(f, m, n, k, label, GemmKernels.GemmKernel, GemmKernels.Family, Tolerance.Matmul, (kernels, x, w, c, rows) => kernels.Gemm(x, w, c, rows, false));

    /// <summary>A case of a GEMM kernel (the gemm, or gemm_f64 of the precise family) launched by <paramref name="launch"/>, checked within <paramref name="tolerance"/>.</summary>
    internal static BenchCase Gemm(WeightFormat f, int m, int n, int k, string label, IKernelDefinition kernel, string family, Tolerance tolerance,
        Action<LlamaKernels, ArrayView<float>, WeightMatrix, ArrayView<float>, int> launch) =>
        new($"{kernel.Name}_{f.Name}", family, $"M={m} {n}x{k} {label}", m, GemmKernels.BytesMoved(f, m, n, k, false), GemmKernels.Flops(m, n, k), ctx =>
        {
            int seed = ctx.SeedOf(4, m, n, k);
            var x = HostData.Floats(seed, (long)m * k);
            var w = HostData.Matrix(seed + 1, n, k, f);
            int copies = ctx.CopiesFor(f.MatrixBytes(n, k));
            var xb = ctx.Upload("bench.gemm.x", x);
            var wb = ctx.Rotated("bench.gemm.w", w, copies);
            var cb = ctx.Alloc<float>("bench.gemm.c", m, n);
            void Launch(int i) => launch(ctx.Kernels, xb, wb.Copy(i), cb, m);

            Validation Validate()
            {
                Launch(0);
                var c = BenchContext.Read(cb);
                var ids = HostData.SampleRows(m, SampledGemmRows, (long)m * n * k <= HostData.FullCheckWork, seed);
                var expected = new double[(long)ids.Length * n];
                KernelReference.Gemm(HostData.Rows(x, ids, k), w, expected, ids.Length, false);
                return Validation.From(HostData.RowsMethod(ids.Length, m, "tokens"), tolerance,
                    tolerance.Check(kernel.Name, HostData.Rows(c, ids, n), expected));
            }

            return new PreparedCase(copies, Validate, Launch);
        });
}
