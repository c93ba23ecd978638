using IlgpuLlama.Sampling;

namespace IlgpuLlama.Tests.Sampling;

public class TokenSamplerTests
{
    /// <summary>Logits of a distribution given by probabilities (T = 1 makes exp(logit) proportional to p).</summary>
    private static float[] LogitsOf(params double[] probabilities) => probabilities.Select(p => (float)Math.Log(p)).ToArray();

    /// <summary>The device's view of a row: top-C sorted (ties by id), lmax and Z.</summary>
    private static (float[] Logits, int[] Ids, float Max, double Z) Candidates(float[] row, int count, float temperature)
    {
        int[] order = Enumerable.Range(0, row.Length)
            .OrderByDescending(i => row[i]).ThenBy(i => i).Take(count).ToArray();
        double z = TokenSampler.ComputeNormalizer(row, temperature, out float max);
        return (order.Select(i => row[i]).ToArray(), order, max, z);
    }

    private static SampleResult SampleCandidates(TokenSampler sampler, float[] row, int count)
    {
        var c = Candidates(row, count, sampler.Options.IsGreedy ? 1f : sampler.Options.Temperature);
        return sampler.Sample(c.Logits, c.Ids, c.Max, c.Z, row.Length);
    }

    private static float[] RandomRow(Random random, int size, float scale)
    {
        var row = new float[size];
        for (int i = 0; i < size; i++) row[i] = (float)(random.NextDouble() * scale);
        return row;
    }

    private static int ArgMax(float[] row) => Array.IndexOf(row, row.Max());

    [Fact]
    public void TinyTemperature_IsGreedy()
    {
        var random = new Random(7);
        var sampler = new TokenSampler(new SamplingOptions { Temperature = 1e-3f, TopK = 0, TopP = 1f, Seed = 1 });
        for (int step = 0; step < 200; step++)
        {
            float[] row = RandomRow(random, 500, 10f);
            row[random.Next(row.Length)] = row.Max() + 0.05f; // a margin of 50 T: the runner-up has p < e^-50
            Assert.Equal(ArgMax(row), SampleCandidates(sampler, row, 16).TokenId);
            Assert.Equal(ArgMax(row), sampler.SampleFull(row).TokenId);
        }
    }

    [Fact]
    public void Greedy_TakesFirstCandidate_AndFullRowArgmax()
    {
        var sampler = new TokenSampler(SamplingOptions.Greedy);
        float[] row = [1f, 5f, 3f, 5f];
        Assert.Equal(1, sampler.SampleFull(row).TokenId); // ties go to the lower id, as in the candidate order
        Assert.Equal(1, SampleCandidates(sampler, row, 2).TokenId);
    }

    [Fact]
    public void TopK1_AlwaysArgmax()
    {
        var random = new Random(8);
        var sampler = new TokenSampler(new SamplingOptions { Temperature = 2f, TopK = 1, TopP = 1f, Seed = 2 });
        for (int step = 0; step < 200; step++)
        {
            float[] row = RandomRow(random, 300, 1f);
            Assert.Equal(ArgMax(row), SampleCandidates(sampler, row, 8).TokenId);
            Assert.Equal(ArgMax(row), sampler.SampleFull(row).TokenId);
        }
    }

    [Theory]
    [InlineData(0.35f, 1)] // 0.4 alone reaches 0.35
    [InlineData(0.65f, 2)] // 0.4 + 0.3
    [InlineData(0.75f, 3)] // 0.4 + 0.3 + 0.2
    [InlineData(0.95f, 4)]
    public void TopP_KeepsTheSmallestPrefixReachingP(float topP, int expectedKept)
    {
        float[] row = LogitsOf(0.4, 0.3, 0.2, 0.06, 0.04);
        var sampler = new TokenSampler(new SamplingOptions { Temperature = 1f, TopK = 0, TopP = topP, Seed = 3 });
        var seen = new HashSet<int>();
        for (int step = 0; step < 2000; step++)
        {
            SampleResult viaCandidates = SampleCandidates(sampler, row, row.Length);
            Assert.Equal(expectedKept, viaCandidates.KeptCount);
            Assert.InRange(viaCandidates.TokenId, 0, expectedKept - 1);
            seen.Add(viaCandidates.TokenId);
            Assert.Equal(expectedKept, sampler.SampleFull(row).KeptCount);
        }
        Assert.Equal(expectedKept, seen.Count);
    }

    [Fact]
    public void MinP_DropsTokensBelowFractionOfTheBest()
    {
        float[] row = LogitsOf(0.5, 0.25, 0.15, 0.1);
        var sampler = new TokenSampler(new SamplingOptions { Temperature = 1f, TopK = 0, TopP = 1f, MinP = 0.25f, Seed = 4 });
        // threshold 0.25 * 0.5 = 0.125: 0.15 stays, 0.1 goes.
        for (int step = 0; step < 500; step++)
        {
            SampleResult result = SampleCandidates(sampler, row, row.Length);
            Assert.Equal(3, result.KeptCount);
            Assert.InRange(result.TokenId, 0, 2);
        }
    }

    [Fact]
    public void MinP_DecidesInsideCandidates_EvenWhenTopPCannot()
    {
        var row = new float[1000];
        row[0] = 10f;
        row[1] = 9f;
        // The remaining 998 tokens hold most of the mass together but are each far below min-p.
        var sampler = new TokenSampler(new SamplingOptions { Temperature = 1f, TopK = 0, TopP = 0.99f, MinP = 0.1f, Seed = 5 });
        SampleResult result = SampleCandidates(sampler, row, 4);
        Assert.False(result.NeedsFullLogits);
        Assert.Equal(2, result.KeptCount);
    }

    [Fact]
    public void UndecidableCandidates_AskForTheFullRow_WithoutConsumingRandomness()
    {
        var random = new Random(9);
        float[] row = RandomRow(random, 1000, 0.5f); // flat: 8 candidates hold far less than top-p
        var options = new SamplingOptions { Temperature = 1f, TopK = 0, TopP = 0.9f, Seed = 6 };
        var sampler = new TokenSampler(options);
        var twin = new TokenSampler(options);

        SampleResult first = SampleCandidates(sampler, row, 8);
        Assert.True(first.NeedsFullLogits);
        Assert.Equal(-1, first.TokenId);

        for (int step = 0; step < 20; step++)
        {
            Assert.Equal(twin.SampleFull(row), sampler.SampleFull(row));
        }
    }

    [Fact]
    public void NoFilters_PendingDraw_IsReusedByTheFullRow()
    {
        var random = new Random(12);
        var options = new SamplingOptions { Temperature = 1f, TopK = 0, TopP = 1f, Seed = 8 };
        var sampler = new TokenSampler(options);
        var twin = new TokenSampler(options);
        int needed = 0, decided = 0;
        for (int step = 0; step < 300; step++)
        {
            // Candidates hold roughly half of the mass, so both outcomes occur.
            float[] row = RandomRow(random, 1000, 0.1f);
            for (int k = 0; k < 8; k++) row[k] += 5f;
            SampleResult result = SampleCandidates(sampler, row, 8);
            if (result.NeedsFullLogits)
            {
                needed++;
                result = sampler.SampleFull(row);
                Assert.True(result.TokenId >= 0);
            }
            else
            {
                decided++;
                Assert.InRange(result.TokenId, 0, 7);
            }
            Assert.Equal(twin.SampleFull(row), result);
        }
        Assert.True(needed > 30 && decided > 30, $"needed {needed}, decided {decided}");
    }

    [Fact]
    public void TopKInsideCandidates_Decides_WhateverTheMass()
    {
        var random = new Random(10);
        float[] row = RandomRow(random, 1000, 0.5f);
        var options = new SamplingOptions { Temperature = 1f, TopK = 8, TopP = 0.9f, Seed = 7 };
        // Nine candidates: the ninth shows that the eighth logit has no tie beyond it, so top-k is known
        // and top-p is measured inside it (renormalised), whatever the full-vocabulary mass.
        SampleResult result = SampleCandidates(new TokenSampler(options), row, 9);
        Assert.False(result.NeedsFullLogits);
        Assert.Equal(new TokenSampler(options).SampleFull(row), result);
        Assert.InRange(result.KeptCount, 7, 8);
        // Exactly eight cannot rule out a tie at the boundary.
        Assert.True(SampleCandidates(new TokenSampler(options), row, 8).NeedsFullLogits);

        var wide = new TokenSampler(new SamplingOptions { Temperature = 1f, TopK = 9, TopP = 0.9f, Seed = 7 });
        Assert.True(SampleCandidates(wide, row, 8).NeedsFullLogits);
    }

    [Theory]
    [InlineData(0.8f, 0, 0.9f, 0f)]
    [InlineData(1.0f, 0, 0.95f, 0.05f)]
    [InlineData(0.6f, 40, 0.9f, 0f)]
    [InlineData(1.3f, 0, 1f, 0.2f)]
    [InlineData(1.0f, 0, 1f, 0f)] // no filter: candidates decide when the draw lands inside their mass
    public void CandidatePath_And_FullPath_PickTheSameToken_ForTheSameDraw(float temperature, int topK, float topP, float minP)
    {
        var options = new SamplingOptions { Temperature = temperature, TopK = topK, TopP = topP, MinP = minP, Seed = 99 };
        var viaCandidates = new TokenSampler(options, sequenceIndex: 3);
        var viaFullRow = new TokenSampler(options, sequenceIndex: 3);
        var random = new Random(11);
        int decided = 0;
        for (int step = 0; step < 400; step++)
        {
            // Peaked rows (a few strong logits over a flat floor) so that the candidates usually decide.
            float[] row = RandomRow(random, 2000, 1f);
            for (int k = 0; k < 6; k++) row[random.Next(row.Length)] += 8f + (float)random.NextDouble() * 4f;

            SampleResult a = SampleCandidates(viaCandidates, row, 64);
            if (a.NeedsFullLogits) a = viaCandidates.SampleFull(row);
            else decided++;
            SampleResult b = viaFullRow.SampleFull(row);
            Assert.Equal(b, a);
        }
        Assert.True(decided > 300, $"only {decided} steps decided from candidates");
    }

    [Fact]
    public void SameSeed_SameSequence_DifferentSeedOrSequence_Differs()
    {
        float[] row = LogitsOf(Enumerable.Repeat(1.0 / 64, 64).ToArray());
        int[] Run(ulong seed, int sequence)
        {
            var sampler = new TokenSampler(new SamplingOptions { Temperature = 1f, TopK = 0, TopP = 1f, Seed = seed }, sequence);
            return Enumerable.Range(0, 50).Select(_ => SampleCandidates(sampler, row, 64).TokenId).ToArray();
        }
        Assert.Equal(Run(42, 0), Run(42, 0));
        Assert.NotEqual(Run(42, 0), Run(43, 0));
        Assert.NotEqual(Run(42, 0), Run(42, 1));
    }

    [Fact]
    public void NoSeed_DrawsOne_AndReportsIt()
    {
        var a = new TokenSampler(new SamplingOptions());
        var b = new TokenSampler(new SamplingOptions { Seed = a.Seed });
        float[] row = LogitsOf(0.3, 0.3, 0.2, 0.2);
        for (int i = 0; i < 20; i++) Assert.Equal(a.SampleFull(row), b.SampleFull(row));
    }

    [Fact]
    public void Frequencies_MatchKeptProbabilities()
    {
        // p = 0.35, 0.25, 0.2, 0.1, 0.06, 0.04; top-p 0.85 keeps the first four (mass 0.9).
        double[] p = [0.35, 0.25, 0.2, 0.1, 0.06, 0.04];
        float[] row = LogitsOf(p);
        var sampler = new TokenSampler(new SamplingOptions { Temperature = 1f, TopK = 0, TopP = 0.85f, Seed = 2024 });
        const int draws = 40_000;
        var counts = new int[p.Length];
        for (int i = 0; i < draws; i++) counts[SampleCandidates(sampler, row, p.Length).TokenId]++;

        Assert.Equal(0, counts[4] + counts[5]);
        double kept = p.Take(4).Sum();
        double chiSquare = 0;
        for (int i = 0; i < 4; i++)
        {
            double expected = draws * p[i] / kept;
            chiSquare += (counts[i] - expected) * (counts[i] - expected) / expected;
        }
        // 3 degrees of freedom: P(chi2 > 25) is about 1.5e-5.
        Assert.True(chiSquare < 25, $"chi-square {chiSquare:F2}, counts {string.Join(",", counts)}");
    }

    [Fact]
    public void Temperature_FlattensTheDistribution()
    {
        float[] row = LogitsOf(0.6, 0.3, 0.1);
        int CountTop(float temperature)
        {
            var sampler = new TokenSampler(new SamplingOptions { Temperature = temperature, TopK = 0, TopP = 1f, Seed = 5 });
            return Enumerable.Range(0, 5000).Count(_ => SampleCandidates(sampler, row, 3).TokenId == 0);
        }
        int cold = CountTop(0.5f), warm = CountTop(1f), hot = CountTop(3f);
        Assert.True(cold > warm && warm > hot, $"{cold} {warm} {hot}");
        Assert.InRange(warm, 2700, 3300); // p = 0.6 at T = 1
    }

    [Fact]
    public void RepetitionPenalty_HuggingFaceSemantics()
    {
        float[] logits = [2f, -2f, 0f, 1f, 3f];
        TokenSampler.ApplyRepetitionPenalty(logits, [0, 1, 1, 2, 0], 2f);
        Assert.Equal([1f, -4f, 0f, 1f, 3f], logits);

        float[] unchanged = [2f, -2f];
        TokenSampler.ApplyRepetitionPenalty(unchanged, [0, 1], 1f);
        Assert.Equal([2f, -2f], unchanged);

        Assert.Throws<ArgumentOutOfRangeException>(() => TokenSampler.ApplyRepetitionPenalty(new float[2], [5], 1.1f));
        Assert.Throws<ArgumentOutOfRangeException>(() => TokenSampler.ApplyRepetitionPenalty(new float[2], [0], 0f));
    }

    [Fact]
    public void Xoshiro_MatchesReferenceAlgorithm()
    {
        // Values from an independent Python transcription of SplitMix64 + xoshiro256**.
        var g0 = new Xoshiro256StarStar(42, 0);
        Assert.Equal([0x7998d7a2effb0987UL, 0xf8277130c9410b0eUL, 0x382a5d7ab31b02a5UL], new[] { g0.NextUInt64(), g0.NextUInt64(), g0.NextUInt64() });
        var g1 = new Xoshiro256StarStar(42, 1);
        Assert.Equal(0xde99af4b49a1c416UL, g1.NextUInt64());
    }
}
