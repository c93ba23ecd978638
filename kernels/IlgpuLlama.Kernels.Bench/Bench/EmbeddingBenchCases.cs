using IlgpuLlama.Kernels.Reference;

namespace IlgpuLlama.Kernels.Bench;

/// <summary>The embedding family's validated benchmark cases.</summary>
sealed class EmbeddingBenchCases : FamilyBenchCases
{
    public override string Family => EmbeddingKernels.Family;

    public override IEnumerable<BenchCase> BenchCases(BenchShapes s, SixteenBitFormat f) =>
        new[] { 4, s.PrefillTokens }.Select(count => Embedding(f, count, s.Hidden, s.Vocab));

    static BenchCase Embedding(SixteenBitFormat f, int count, int hidden, int vocab) =>
        new($"embedding_{f.Name}", EmbeddingKernels.Family, $"{count} tokens x {hidden}, vocab {vocab}", count, EmbeddingKernels.BytesMoved(f, count, hidden), 0, ctx =>
        {
            int seed = ctx.SeedOf(6, count, hidden, vocab);
            var table = HostData.Weights(seed, (long)vocab * hidden, f, 1.0);
            int copies = ctx.CopiesFor(EmbeddingKernels.BytesMoved(f, count, hidden));
            // Every copy is a different random token list, so rotation reads different table rows.
            var tokens = HostData.Ints(seed + 1, (long)copies * count, vocab);
            var tableb = WeightMatrix.Of(f, ctx.Upload("bench.embedding.table", table), vocab, hidden);
            var tokb = ctx.Upload("bench.embedding.tokens", tokens);
            var xb = ctx.Alloc<float>("bench.embedding.x", count, hidden);
            void Launch(int i) => ctx.Kernels.Embedding(tableb, tokb.SubView((long)(i % copies) * count, count), xb, count);

            Validation Validate()
            {
                Launch(0);
                var expected = new double[(long)count * hidden];
                KernelReference.Embedding(table, tokens[..count], expected, hidden, f);
                return Validation.From(HostData.RowsMethod(count, count, "tokens"), Tolerance.Exact, Tolerance.Exact.Check("embedding", BenchContext.Read(xb), expected));
            }

            return new PreparedCase(copies, Validate, Launch);
        });
}
