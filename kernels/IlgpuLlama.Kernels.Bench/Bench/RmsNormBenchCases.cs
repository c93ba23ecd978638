using IlgpuLlama.Kernels.Reference;

namespace IlgpuLlama.Kernels.Bench;

/// <summary>The rmsnorm family's validated benchmark cases.</summary>
sealed class RmsNormBenchCases : FamilyBenchCases
{
    public override string Family => RmsNormKernels.Family;

    public override IEnumerable<BenchCase> BenchCases(BenchShapes s, SixteenBitFormat f) =>
        new[] { 1, 4, s.PrefillTokens }.Select(rows => RmsNorm(f, rows, s.Hidden));

    static BenchCase RmsNorm(SixteenBitFormat f, int rows, int n) =>
        new($"rmsnorm_{f.Name}", RmsNormKernels.Family, $"{rows}x{n}", rows, RmsNormKernels.BytesMoved(f, rows, n), RmsNormKernels.Flops(rows, n), ctx =>
        {
            int seed = ctx.SeedOf(5, rows, n);
            var x = HostData.Floats(seed, (long)rows * n, 3.0);
            var w = HostData.Weights(seed + 1, n, f, 1.5);
            int copies = ctx.CopiesFor(8L * rows * n);
            var xb = ctx.Rotated("bench.rmsnorm.x", x, copies);
            var wb = ctx.Upload("bench.rmsnorm.w", w);
            var yb = ctx.Alloc<float>("bench.rmsnorm.y", rows, n);
            const float eps = 1e-5f;
            void Launch(int i) => ctx.Kernels.RmsNorm(xb.Copy(i), new WeightVector(f, wb), yb, rows, n, eps);

            Validation Validate()
            {
                Launch(0);
                var expected = new double[(long)rows * n];
                KernelReference.RmsNorm(x, w, expected, n, eps, f);
                return Validation.From(HostData.RowsMethod(rows, rows), Tolerance.Elementwise, Tolerance.Elementwise.Check("rmsnorm", BenchContext.Read(yb), expected));
            }

            return new PreparedCase(copies, Validate, Launch);
        });
}
