using IlgpuLlama.Kernels.Reference;

namespace IlgpuLlama.Kernels.Bench;

/// <summary>The rmsnorm family's validated benchmark cases.</summary>
sealed class RmsNormBenchCases : FamilyBenchCases
{
    public override string Family => RmsNormKernels.Family;

    public override IEnumerable<BenchCase> BenchCases(BenchShapes s, SixteenBitFormat f) =>
        new[] { 1, 4, s.PrefillTokens }.Select(rows => RmsNorm(f, rows, s.Hidden));

    static BenchCase RmsNorm(SixteenBitFormat f, int rows, int n) =>
        RmsNorm(f, rows, n, RmsNormKernels.RmsNormKernel, RmsNormKernels.Family, 5, 1e-5f, Tolerance.Elementwise,
            (kernels, x, w, y, eps) => kernels.RmsNorm(x, w, y, rows, n, (float)eps));

    /// <summary>A case of an RMSNorm kernel (rmsnorm, or rmsnorm_f64 of the precise family) launched by <paramref name="launch"/> with <paramref name="eps"/>, checked within <paramref name="tolerance"/>.</summary>
    internal static BenchCase RmsNorm(SixteenBitFormat f, int rows, int n, IKernelDefinition kernel, string family, int seedSalt, double eps, Tolerance tolerance,
        Action<LlamaKernels, ArrayView<float>, WeightVector, ArrayView<float>, double> launch) =>
        new($"{kernel.Name}_{f.Name}", family, $"{rows}x{n}", rows, RmsNormKernels.BytesMoved(f, rows, n), RmsNormKernels.Flops(rows, n), ctx =>
        {
            int seed = ctx.SeedOf(seedSalt, rows, n);
            var x = HostData.Floats(seed, (long)rows * n, 3.0);
            var w = HostData.Weights(seed + 1, n, f, 1.5);
            int copies = ctx.CopiesFor(8L * rows * n);
            var xb = ctx.Rotated($"bench.{kernel.Name}.x", x, copies);
            var wb = ctx.Upload($"bench.{kernel.Name}.w", w);
            var yb = ctx.Alloc<float>($"bench.{kernel.Name}.y", rows, n);
            void Launch(int i) => launch(ctx.Kernels, xb.Copy(i), new WeightVector(f, wb), yb, eps);

            Validation Validate()
            {
                Launch(0);
                var expected = new double[(long)rows * n];
                KernelReference.RmsNorm(x, w, expected, n, eps, f);
                return Validation.From(HostData.RowsMethod(rows, rows), tolerance, tolerance.Check(kernel.Name, BenchContext.Read(yb), expected));
            }

            return new PreparedCase(copies, Validate, Launch);
        });
}
