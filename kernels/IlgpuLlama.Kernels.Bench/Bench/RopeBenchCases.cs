using IlgpuLlama.Kernels.Reference;

namespace IlgpuLlama.Kernels.Bench;

/// <summary>The rope family's validated benchmark case.</summary>
sealed class RopeBenchCases : FamilyBenchCases
{
    public override string Family => RopeKernels.Family;

    public override IEnumerable<BenchCase> BenchCases(BenchShapes s, SixteenBitFormat f)
    {
        int tokens = s.PrefillTokens;
        var shape = new AttentionShape(s.Heads, s.KvHeads, s.HeadDim, tokens);
        yield return new("rope", RopeKernels.Family, $"{tokens} tokens, {s.Heads}+{s.KvHeads} heads x {s.HeadDim}", tokens,
            RopeKernels.BytesMoved(tokens, shape), RopeKernels.Flops(tokens, shape), ctx =>
            {
                int seed = ctx.SeedOf(13, tokens);
                var q = HostData.Floats(seed, (long)tokens * shape.QDim);
                var kv = HostData.Floats(seed + 1, (long)tokens * shape.KvDim);
                int[] positions = Enumerable.Range(0, tokens).ToArray();
                var rope = RopeTable.Plain(shape.HeadDim, tokens);
                int copies = ctx.CopiesFor(RopeKernels.BytesMoved(tokens, shape));
                var qb = ctx.Rotated("bench.rope.q", q, copies);
                var kb = ctx.Rotated("bench.rope.k", kv, copies);
                var pb = ctx.Upload("bench.rope.positions", positions);
                var rb = ctx.Upload("bench.rope.table", rope);
                void Launch(int i) => ctx.Kernels.Rope(qb.Copy(i), kb.Copy(i), pb, rb, tokens, shape);

                Validation Validate()
                {
                    Launch(0);
                    var eq = HostData.ToDouble(q);
                    var ek = HostData.ToDouble(kv);
                    KernelReference.Rope(eq, ek, positions, rope, shape.Heads, shape.KvHeads, shape.HeadDim);
                    return Validation.From($"all {tokens} tokens", Tolerance.Elementwise,
                        Tolerance.Elementwise.Check("rope q", BenchContext.Read(qb.Copy(0)), eq),
                        Tolerance.Elementwise.Check("rope k", BenchContext.Read(kb.Copy(0)), ek));
                }

                return new PreparedCase(copies, Validate, Launch);
            });
    }
}
