using IlgpuLlama.Kernels.Reference;

namespace IlgpuLlama.Kernels.Bench;

/// <summary>The logits family's validated benchmark cases.</summary>
sealed class LogitsBenchCases : FamilyBenchCases
{
    public override string Family => LogitsKernels.Family;

    public override IEnumerable<BenchCase> BenchCases(BenchShapes s, SixteenBitFormat f)
    {
        foreach (int b in new[] { 1, 4 })
        {
            yield return Reduce(s.Vocab, b);
            yield return TopK(s.Vocab, b, s.TopK);
        }
        yield return RepetitionPenalty(s.Vocab, 4);
    }

    static BenchCase Reduce(int vocab, int rows) =>
        new("logits_reduce", LogitsKernels.Family, $"vocab {vocab}", rows, LogitsKernels.ReduceBytesMoved(rows, vocab), LogitsKernels.ReduceFlops(rows, vocab), ctx =>
        {
            int seed = ctx.SeedOf(9, vocab, rows);
            var logits = HostData.Floats(seed, (long)rows * vocab, 8.0);
            int parts = LogitsKernels.ReduceParts(vocab, ctx.Kernels.Tuning);
            int copies = ctx.CopiesFor(4L * rows * vocab);
            var lb = ctx.Rotated("bench.logits_reduce.logits", logits, copies);
            var buffers = new LogitsReduceBuffers(
                ctx.Alloc<float>("bench.logits_reduce.partial_max", rows, parts), ctx.Alloc<float>("bench.logits_reduce.partial_sum", rows, parts),
                ctx.Alloc<int>("bench.logits_reduce.partial_idx", rows, parts), ctx.Upload("bench.logits_reduce.counters", new int[rows]),
                ctx.Alloc<int>("bench.logits_reduce.token", rows), ctx.Alloc<float>("bench.logits_reduce.max", rows), ctx.Alloc<float>("bench.logits_reduce.sum_exp", rows));
            // A different temperature per row, as a mixed decode step has.
            var temperatures = Enumerable.Range(0, rows).Select(r => 0.8f + 0.1f * r).ToArray();
            var invT = ctx.Upload("bench.logits_reduce.inv_temperature", Array.ConvertAll(temperatures, LogitsKernels.InverseTemperature));
            void Launch(int i) => ctx.Kernels.LogitsReduce(lb.Copy(i), buffers, invT, rows, vocab);

            Validation Validate()
            {
                Launch(0);
                var (eTok, eMax, eSum) = KernelReference.LogitsReduce(logits, rows, vocab, Array.ConvertAll(temperatures, t => 1.0 / t));
                return Validation.From($"all {rows} rows x {vocab}", Tolerance.Normaliser,
                    Tolerance.Exact.Check("argmax", HostData.IntsAsFloats(BenchContext.Read(buffers.Token)), Array.ConvertAll(eTok, v => (double)v)),
                    Tolerance.Exact.Check("max", BenchContext.Read(buffers.Max), eMax),
                    Tolerance.Normaliser.Check("sum exp", BenchContext.Read(buffers.SumExp), eSum));
            }

            return new PreparedCase(copies, Validate, Launch);
        });

    static BenchCase TopK(int vocab, int rows, int wantK) =>
        new("topk", LogitsKernels.Family, $"vocab {vocab}", rows, LogitsKernels.TopKBytesMoved(rows, vocab, wantK), 0, ctx =>
        {
            int k = Math.Min(wantK, LogitsKernels.TopKMax(vocab, ctx.Kernels.Tuning));
            int seed = ctx.SeedOf(10, vocab, rows);
            var logits = HostData.Floats(seed, (long)rows * vocab, 8.0);
            int parts = LogitsKernels.TopKParts(vocab, ctx.Kernels.Tuning);
            int copies = ctx.CopiesFor(4L * rows * vocab);
            var lb = ctx.Rotated("bench.topk.logits", logits, copies);
            var buffers = new TopKBuffers(ctx.Alloc<float>("bench.topk.partial_val", rows, parts, k), ctx.Alloc<int>("bench.topk.partial_idx", rows, parts, k),
                ctx.Upload("bench.topk.counters", new int[rows]), ctx.Alloc<float>("bench.topk.values", rows, k), ctx.Alloc<int>("bench.topk.ids", rows, k));
            void Launch(int i) => ctx.Kernels.TopK(lb.Copy(i), buffers, rows, vocab, k);

            Validation Validate()
            {
                Launch(0);
                var (eVal, eIds) = KernelReference.TopK(logits, rows, vocab, k);
                return Validation.From($"all {rows} rows, k={k}", Tolerance.Exact,
                    Tolerance.Exact.Check("top-k ids", HostData.IntsAsFloats(BenchContext.Read(buffers.Ids)), Array.ConvertAll(eIds, v => (double)v)),
                    Tolerance.Exact.Check("top-k values", BenchContext.Read(buffers.Values), HostData.ToDouble(eVal)));
            }

            return new PreparedCase(copies, Validate, Launch, k == wantK ? null : $"k clamped to {k}");
        });

    static BenchCase RepetitionPenalty(int vocab, int rows)
    {
        const double seenFraction = 0.05;
        long seenCount = (long)(rows * (long)vocab * seenFraction);
        return new("repetition_penalty", LogitsKernels.Family, $"vocab {vocab}, 5% seen", rows,
            LogitsKernels.RepetitionPenaltyBytesMoved(rows, vocab, seenCount), 0, ctx =>
            {
                int seed = ctx.SeedOf(11, vocab, rows);
                var logits = HostData.Floats(seed, (long)rows * vocab, 8.0);
                var rng = new Random(seed + 1);
                var seen = new byte[(long)rows * vocab];
                for (long i = 0; i < seen.LongLength; i++)
                    seen[i] = rng.NextDouble() < seenFraction ? (byte)1 : (byte)0;
                int[] slots = Enumerable.Range(0, rows).ToArray();
                int copies = ctx.CopiesFor((long)rows * vocab * 5);
                var lb = ctx.Rotated("bench.repetition_penalty.logits", logits, copies);
                var seenb = ctx.Rotated("bench.repetition_penalty.seen", seen, copies);
                var sb = ctx.Upload("bench.repetition_penalty.slots", slots);
                var penalties = Enumerable.Range(0, rows).Select(r => r % 2 == 0 ? 1.3f : 0.8f).ToArray(); // > 0 at any row count
                var pb = ctx.Upload("bench.repetition_penalty.penalties", penalties);
                void Launch(int i) => ctx.Kernels.RepetitionPenalty(lb.Copy(i), sb, seenb.Copy(i), pb, rows, vocab);

                Validation Validate()
                {
                    Launch(0);
                    var expected = (float[])logits.Clone();
                    KernelReference.RepetitionPenalty(expected, slots, seen, vocab, penalties);
                    return Validation.From($"all {rows} rows x {vocab}", Tolerance.Exact,
                        Tolerance.Exact.Check("repetition penalty", BenchContext.Read(lb.Copy(0)), HostData.ToDouble(expected)));
                }

                return new PreparedCase(copies, Validate, Launch);
            });
    }
}
