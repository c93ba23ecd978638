using IlgpuLlama.Sampling;

namespace IlgpuLlama.Tests.Sampling;

/// <summary>
/// The sampler against a transcription of Hugging Face transformers' logits warpers
/// (TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper, MinPLogitsWarper, applied in that
/// order as <c>GenerationMixin._get_logits_processor</c> does, each on the scores the previous one left):
/// the kept sets and the sampled frequencies.
/// </summary>
public sealed class WarperOrderTests
{
    /// <summary>
    /// The final distribution transformers samples from, written as its warpers are: scores / T; top-k
    /// masks scores below the k-th largest to -inf; top-p sorts ascending, takes the cumulative softmax
    /// and masks where it is &lt;= 1 - top_p, keeping the last; min-p masks probabilities below
    /// min_p x max; then softmax.
    /// </summary>
    static double[] Transformers(float[] logits, SamplingOptions o)
    {
        int n = logits.Length;
        var scores = logits.Select(l => (double)l / o.Temperature).ToArray();
        if (o.TopK > 0)
        {
            int k = Math.Min(o.TopK, n);
            double kth = scores.OrderByDescending(x => x).ElementAt(k - 1);
            for (int i = 0; i < n; i++) if (scores[i] < kth) scores[i] = double.NegativeInfinity;
        }
        if (o.TopP < 1f)
        {
            var probs = Softmax(scores);
            // Ascending by score; among equal scores the higher id first, so that descending order breaks ties by lower id.
            int[] ascending = Enumerable.Range(0, n).OrderBy(i => scores[i]).ThenByDescending(i => i).ToArray();
            double cumulative = 0;
            var remove = new bool[n];
            for (int j = 0; j < n; j++)
            {
                cumulative += probs[ascending[j]];
                remove[ascending[j]] = cumulative <= 1 - o.TopP;
            }
            remove[ascending[^1]] = false; // min_tokens_to_keep = 1
            for (int i = 0; i < n; i++) if (remove[i]) scores[i] = double.NegativeInfinity;
        }
        if (o.MinP > 0f)
        {
            var probs = Softmax(scores);
            double threshold = o.MinP * probs.Max();
            int top = Array.IndexOf(probs, probs.Max());
            for (int i = 0; i < n; i++) if (probs[i] < threshold && i != top) scores[i] = double.NegativeInfinity;
        }
        return Softmax(scores);
    }

    static double[] Softmax(double[] scores)
    {
        double max = scores.Max();
        var e = scores.Select(s => double.IsNegativeInfinity(s) ? 0 : Math.Exp(s - max)).ToArray();
        double sum = e.Sum();
        return e.Select(x => x / sum).ToArray();
    }

    static float[] Row(int seed, int size, float peak)
    {
        var random = new Random(seed);
        var row = new float[size];
        for (int i = 0; i < size; i++) row[i] = (float)(random.NextDouble() * 2);
        for (int i = 0; i < 6; i++) row[random.Next(size)] += peak * (float)random.NextDouble();
        return row;
    }

    public static TheoryData<float, int, float, float> Settings() => new()
    {
        { 1f, 8, 0.8f, 0f },     // the case: top-p inside a top-8 set that holds less than 0.8 of the full mass
        { 0.7f, 5, 0.5f, 0f },
        { 1.3f, 20, 0.9f, 0.05f },
        { 1f, 0, 0.9f, 0f },
        { 1f, 3, 1f, 0f },
        { 0.9f, 0, 1f, 0.2f },
        { 1f, 12, 0.7f, 0.3f },  // min-p applied after top-p
        { 2f, 50, 0.95f, 0f },
    };

    [Theory]
    [MemberData(nameof(Settings))]
    public void Kept_sets_are_transformers_kept_sets(float temperature, int topK, float topP, float minP)
    {
        var options = new SamplingOptions { Temperature = temperature, TopK = topK, TopP = topP, MinP = minP, Seed = 5 };
        for (int seed = 0; seed < 40; seed++)
        {
            float[] row = Row(seed, 300, 6f);
            int expected = Transformers(row, options).Count(p => p > 0);
            var result = new TokenSampler(options).SampleFull(row);
            Assert.True(expected == result.KeptCount, $"row {seed}: transformers keeps {expected}, sampler {result.KeptCount}");
            Assert.True(Transformers(row, options)[result.TokenId] > 0, $"row {seed}: sampled token {result.TokenId} is outside transformers' kept set");
        }
    }

    [Fact]
    public void Top_p_is_measured_in_the_mass_renormalised_after_top_k()
    {
        // Eight tokens with 0.4 of the mass between them, the rest spread thin: top-p 0.8 of the top-8
        // set keeps fewer than eight (full-vocabulary mass would never reach 0.8 inside them).
        var probabilities = new List<double> { 0.12, 0.08, 0.06, 0.05, 0.04, 0.02, 0.02, 0.01 };
        probabilities.AddRange(Enumerable.Repeat(0.6 / 200, 200));
        float[] row = probabilities.Select(p => (float)Math.Log(p)).ToArray();
        var options = new SamplingOptions { Temperature = 1f, TopK = 8, TopP = 0.8f, Seed = 1 };
        // Renormalised: 0.3, 0.2, 0.15, 0.125 -> cumulative 0.775 < 0.8, then 0.1 -> 0.875: five kept.
        Assert.Equal(5, Transformers(row, options).Count(p => p > 0));
        Assert.Equal(5, new TokenSampler(options).SampleFull(row).KeptCount);
    }

    [Theory]
    [MemberData(nameof(Settings))]
    public void Sampled_frequencies_match_transformers_distribution(float temperature, int topK, float topP, float minP)
    {
        var options = new SamplingOptions { Temperature = temperature, TopK = topK, TopP = topP, MinP = minP, Seed = 77 };
        float[] row = Row(1234, 200, 5f);
        double[] reference = Transformers(row, options);
        var sampler = new TokenSampler(options);
        const int draws = 20_000;
        var counts = new int[row.Length];
        for (int i = 0; i < draws; i++) counts[sampler.SampleFull(row).TokenId]++;
        for (int id = 0; id < row.Length; id++)
        {
            double f = (double)counts[id] / draws, p = reference[id];
            if (p == 0)
                Assert.True(counts[id] == 0, $"token {id} sampled {counts[id]} times, transformers never keeps it");
            else
                Assert.True(Math.Abs(f - p) <= 5 * Math.Sqrt(p * (1 - p) / draws) + 1e-4, $"token {id}: frequency {f:F4}, transformers {p:F4}");
        }
    }

    [Theory]
    [MemberData(nameof(Settings))]
    public void Candidates_and_the_full_row_agree(float temperature, int topK, float topP, float minP)
    {
        var options = new SamplingOptions { Temperature = temperature, TopK = topK, TopP = topP, MinP = minP, Seed = 3 };
        var viaCandidates = new TokenSampler(options);
        var viaFull = new TokenSampler(options);
        for (int seed = 0; seed < 60; seed++)
        {
            float[] row = Row(seed + 100, 400, 9f);
            int[] order = Enumerable.Range(0, row.Length).OrderByDescending(i => row[i]).ThenBy(i => i).Take(16).ToArray();
            double z = TokenSampler.ComputeNormalizer(row, temperature, out float max);
            var a = viaCandidates.Sample(order.Select(i => row[i]).ToArray(), order, max, z, row.Length);
            if (a.NeedsFullLogits) a = viaCandidates.SampleFull(row);
            Assert.Equal(viaFull.SampleFull(row), a);
        }
    }
}
