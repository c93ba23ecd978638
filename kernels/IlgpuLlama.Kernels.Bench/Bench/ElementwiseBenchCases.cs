using IlgpuLlama.Kernels.Reference;

namespace IlgpuLlama.Kernels.Bench;

/// <summary>The elementwise family's benchmark case: the one kernel that matters for speed (SwiGLU).</summary>
sealed class ElementwiseBenchCases : FamilyBenchCases
{
    public override string Family => ElementwiseKernels.Family;

    public override IEnumerable<BenchCase> BenchCases(BenchShapes s, SixteenBitFormat f)
    {
        int tokens = s.PrefillTokens, inter = s.Intermediate;
        long n = (long)tokens * inter;
        yield return new("swiglu", ElementwiseKernels.Family, $"{tokens}x{inter}", tokens, ElementwiseKernels.SwiGluBytesMoved(n), ElementwiseKernels.SwiGluFlops(n), ctx =>
        {
            int seed = ctx.SeedOf(12, tokens, inter);
            var gate = HostData.Floats(seed, n, 4.0);
            var up = HostData.Floats(seed + 1, n, 2.0);
            int copies = ctx.CopiesFor(12L * n);
            var gb = ctx.Rotated("bench.swiglu.gate", gate, copies);
            var ub = ctx.Rotated("bench.swiglu.up", up, copies);
            void Launch(int i) => ctx.Kernels.SwiGlu(gb.Copy(i), ub.Copy(i), (int)n);

            Validation Validate()
            {
                Launch(0);
                var expected = HostData.ToDouble(gate);
                KernelReference.SwiGlu(expected, up);
                return Validation.From($"all {n} values", Tolerance.Elementwise, Tolerance.Elementwise.Check("swiglu", BenchContext.Read(gb.Copy(0)), expected));
            }

            return new PreparedCase(copies, Validate, Launch);
        });
    }
}
