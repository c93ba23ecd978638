using ILGPU;
using ILGPU.Runtime;
using IlgpuLlama.Kernels;
using IlgpuLlama.Kernels.Reference;

namespace IlgpuLlama.Tests.Kernels;

[Collection(KernelCollection.Name)]
public sealed class LogitsTests(KernelTestContext ctx)
{
    [Theory]
    [InlineData(4, 997, 0.7f)]
    [InlineData(4, 64, 1.0f)]
    [InlineData(32, 517, 1.3f)]
    [InlineData(2, 997, 0.9f)]
    [InlineData(1, 997, 0.9f)]
    public void Reduce_gives_argmax_max_and_normaliser(int warp, int vocab, float temperature)
    {
        var k = ctx.Kernels(warp);
        var rng = new Random(vocab);
        int rows = 4;
        var logits = TestData.Floats(rng, rows * vocab, 8);
        // Row 1: a tie for the max at two ids; the smaller id must win.
        logits[1 * vocab + 10] = 50f;
        logits[1 * vocab + vocab - 3] = 50f;
        // Row 2: a NaN poisons the row.
        logits[2 * vocab + vocab / 2] = float.NaN;
        // Row 3: -inf entries are ignored by the normaliser.
        logits[3 * vocab + 1] = float.NegativeInfinity;
        // Each row has its own temperature, read from device memory (a decode step mixes requests).
        var temperatures = Enumerable.Range(0, rows).Select(r => temperature * (1f + 0.5f * r)).ToArray();
        var (eTok, eMax, eSum) = KernelReference.LogitsReduce(logits, rows, vocab, Array.ConvertAll(temperatures, t => 1.0 / t));

        var a = k.Accelerator;
        int parts = LogitsKernels.ReduceParts(vocab, k.Tuning);
        using var lb = a.Allocate1D(logits);
        using var pm = a.Allocate1D<float>(rows * parts);
        using var ps = a.Allocate1D<float>(rows * parts);
        using var pi = a.Allocate1D<int>(rows * parts);
        using var cnt = a.Allocate1D<int>(rows);
        using var tok = a.Allocate1D<int>(rows);
        using var max = a.Allocate1D<float>(rows);
        using var sum = a.Allocate1D<float>(rows);
        using var invT = a.Allocate1D(Array.ConvertAll(temperatures, LogitsKernels.InverseTemperature));
        cnt.MemSetToZero();
        k.LogitsReduce(lb.View, new LogitsReduceBuffers(pm.View, ps.View, pi.View, cnt.View, tok.View, max.View, sum.View), invT.View, rows, vocab);
        Assert.Equal(eTok, tok.GetAsArray1D());
        Assert.Equal(10, eTok[1]);
        Assert.Equal(-1, eTok[2]);
        var gotMax = max.GetAsArray1D();
        var gotSum = sum.GetAsArray1D();
        foreach (int r in new[] { 0, 1, 3 })
        {
            Assert.Equal(eMax[r], gotMax[r], 6);
            Assert.True(Math.Abs(gotSum[r] - eSum[r]) <= 1e-4 * eSum[r], $"row {r}: Z {gotSum[r]} vs {eSum[r]}");
        }
        Assert.All(cnt.GetAsArray1D(), v => Assert.Equal(0, v));
    }

    [Theory]
    [InlineData(4, 997, 5)]
    [InlineData(4, 997, 64)]
    [InlineData(4, 100, 1)]
    [InlineData(32, 700, 40)]
    [InlineData(2, 997, 7)]
    [InlineData(1, 997, 7)]
    public void TopK_returns_sorted_largest_with_ids(int warp, int vocab, int topK)
    {
        var k = ctx.Kernels(warp);
        var rng = new Random(vocab + topK);
        int rows = 3;
        var logits = TestData.Floats(rng, rows * vocab, 5);
        // duplicates: equal values must come out smaller id first
        logits[5] = logits[vocab - 1] = 9f;
        var (eVal, eIds) = KernelReference.TopK(logits, rows, vocab, topK);

        var a = k.Accelerator;
        int parts = LogitsKernels.TopKParts(vocab, k.Tuning);
        using var lb = a.Allocate1D(logits);
        using var pv = a.Allocate1D<float>(rows * parts * topK);
        using var pi = a.Allocate1D<int>(rows * parts * topK);
        using var cnt = a.Allocate1D<int>(rows);
        using var ov = a.Allocate1D<float>(rows * topK);
        using var oi = a.Allocate1D<int>(rows * topK);
        cnt.MemSetToZero();
        k.TopK(lb.View, new TopKBuffers(pv.View, pi.View, cnt.View, ov.View, oi.View), rows, vocab, topK);
        Assert.Equal(eIds, oi.GetAsArray1D());
        Assert.Equal(eVal, ov.GetAsArray1D());
        Assert.Equal(5, oi.GetAsArray1D()[0]);
        if (topK > 1)
            Assert.Equal(vocab - 1, oi.GetAsArray1D()[1]);
    }

    [Fact]
    public void RepetitionPenalty_applies_each_rows_penalty_to_its_seen_tokens_only()
    {
        var k = ctx.Kernels(4);
        var rng = new Random(5);
        int rows = 3, vocab = 50, slotCount = 3;
        var logits = TestData.Floats(rng, rows * vocab, 3);
        int[] slots = [2, 0, 1];
        float[] penalties = [1.3f, 0.7f, 1f];
        int[] history = [3, 7, 7, 49, 0, 5];
        int[] historySlots = [2, 2, 2, 0, 0, 1];
        var seen = new byte[slotCount * vocab];
        for (int i = 0; i < history.Length; i++)
            seen[historySlots[i] * vocab + history[i]] = 1;
        var expected = (float[])logits.Clone();
        KernelReference.RepetitionPenalty(expected, slots, seen, vocab, penalties);

        var a = k.Accelerator;
        using var lb = a.Allocate1D(logits);
        using var sb = a.Allocate1D(slots);
        using var hb = a.Allocate1D(history);
        using var hsb = a.Allocate1D(historySlots);
        using var pb = a.Allocate1D(penalties);
        using var seenb = a.Allocate1D<byte>(slotCount * vocab);
        seenb.MemSetToZero();
        k.MarkSeen(hb.View, hsb.View, seenb.View, history.Length, vocab);
        Assert.Equal(seen, seenb.GetAsArray1D());
        k.RepetitionPenalty(lb.View, sb.View, seenb.View, pb.View, rows, vocab);
        var got = lb.GetAsArray1D();
        Assert.Equal(expected, got);
        Assert.NotEqual(logits[3], expected[3]);          // row 0 (slot 2) saw token 3: penalised by 1.3
        Assert.NotEqual(logits[vocab + 49], expected[vocab + 49]); // row 1 (slot 0) saw 49: by 0.7
        // Row 2's penalty is 1: its seen token keeps its logit bit for bit.
        Assert.Equal(logits.AsSpan(2 * vocab, vocab).ToArray(), got.AsSpan(2 * vocab, vocab).ToArray());
    }
}
