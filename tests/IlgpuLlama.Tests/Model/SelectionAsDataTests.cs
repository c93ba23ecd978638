using IlgpuLlama.Device;
using IlgpuLlama.Engine;
using IlgpuLlama.Sampling;

namespace IlgpuLlama.Tests.Model;

/// <summary>
/// Sampling settings reach the device as data: a recorded decode step serves every temperature and
/// penalty, rows with different settings share one pass, and the graph cache is keyed by shape
/// only and bounded (least recently used out).
/// </summary>
public sealed class SelectionAsDataTests
{
    sealed class CountingGraph(List<int> disposed, int id) : ILaunchGraph
    {
        public void Launch()
        {
        }

        public void Dispose() => disposed.Add(id);
    }

    [Fact]
    public void The_graph_cache_holds_at_most_its_capacity_and_evicts_the_least_recently_used()
    {
        var disposed = new List<int>();
        using (var cache = new LaunchGraphCache<int>(3))
        {
            ILaunchGraph Get(int key) => cache.GetOrRecord(key, () => new CountingGraph(disposed, key));
            Get(1);
            Get(2);
            Get(3);
            Assert.Same(Get(1), Get(1)); // a hit records nothing and makes 1 the most recent
            Assert.Equal(3, cache.Recorded);
            Get(4);                      // full: 2 is the least recently used
            Assert.Equal([2], disposed);
            Assert.False(cache.Contains(2));
            Assert.True(cache.Contains(1) && cache.Contains(3) && cache.Contains(4));
            for (int key = 10; key < 110; key++)
                Get(key);
            Assert.Equal(3, cache.Count);
            Assert.Equal(104, cache.Recorded);
            Assert.Equal(101, cache.Evicted);
        }
        Assert.Equal(104, disposed.Count); // disposing the cache disposes what it held
        Assert.Equal(104, disposed.Distinct().Count());
        Assert.Throws<ArgumentOutOfRangeException>(() => new LaunchGraphCache<int>(0));
    }

    [Fact]
    public void A_hundred_temperatures_replay_one_recorded_step_and_each_rows_settings_are_applied()
    {
        using var device = ComputeDevice.Create(DeviceKind.Cpu);
        using var model = LlamaModel.Load(device, GoldenFixture.Directory, new EngineOptions { MaxBatchSize = 3, MaxSeqLen = 32, DecodeLaunch = DecodeLaunch.Graph });
        Assert.True(model.UseGraphs);
        int vocab = model.Config.VocabSize;
        var prompt = GoldenFixture.Cases[0].Prompt;
        model.Prefill([new SequenceInput(0, 0, prompt)], SelectMode.ArgMax);
        int position = prompt.Length, token = GoldenFixture.Cases[0].Greedy16[0];
        var row = new float[vocab];

        // The same position decoded again rewrites the same K/V, so only the temperature changes.
        for (int i = 0; i < 100; i++)
        {
            float temperature = 0.05f + 0.037f * i;
            var step = model.Decode([new DecodeRow(0, position, token)], new SelectMode(false, temperature, 1f, 8));
            model.ReadLogitsRow(0, row);
            double z = TokenSampler.ComputeNormalizer(row, temperature, out float max);
            Assert.Equal(max, step.MaxLogit![0]);
            Assert.True(Math.Abs(step.SumExp![0] - z) <= 1e-5 * z, $"T {temperature}: normaliser {step.SumExp[0]} vs {z} from the logits");
        }
        Assert.Equal(1, model.RecordedGraphs);
        Assert.True(model.RecordedGraphs <= LlamaModel.GraphCacheCapacity);
        // Top-k values 1..63 fall into the power-of-two candidate counts: a handful of graphs, not 63.
        for (int k = 1; k < Math.Min(64, model.Plan.Shape.TopKCapacity); k++)
            model.Decode([new DecodeRow(0, position, token)], new SelectMode(false, 0.9f, 1f, k));
        Assert.True(model.RecordedGraphs <= 1 + (int)Math.Log2(model.Plan.Shape.TopKCapacity) + 1, $"{model.RecordedGraphs} graphs for 63 top-k values");

        int before = model.RecordedGraphs;
        // Three rows, three settings, one pass: greedy, sampling with a penalty, sampling without.
        var second = GoldenFixture.Cases[1].Prompt;
        model.Prefill([new SequenceInput(1, 0, second), new SequenceInput(2, 0, second)], SelectMode.ArgMax);
        var rows = new[] { new DecodeRow(0, position, token), new DecodeRow(1, second.Length, 7), new DecodeRow(2, second.Length, 7) };
        SelectMode[] modes = [SelectMode.ArgMax, new(false, 0.7f, 1.3f, 5), new(false, 1.5f, 1f, 9)];
        var mixed = model.Decode(rows, modes);
        // The most candidates any row asked for (9), rounded up to a power of two so that a client's
        // top_k does not record a graph per value.
        int candidates = Math.Min(16, model.Plan.Shape.TopKCapacity);
        Assert.Equal(new SelectShape(false, true, candidates), mixed.Shape);
        var logits = Enumerable.Range(0, 3).Select(r =>
        {
            var l = new float[vocab];
            model.ReadLogitsRow(r, l);
            return l;
        }).ToArray();
        for (int r = 0; r < 3; r++)
        {
            var l = logits[r];
            float max = l.Max();
            Assert.Equal(Array.IndexOf(l, max), mixed.ArgMax[r]);
            Assert.Equal(max, mixed.MaxLogit![r]);
            if (!modes[r].Greedy)
            {
                double z = TokenSampler.ComputeNormalizer(l, modes[r].Temperature, out _);
                Assert.True(Math.Abs(mixed.SumExp![r] - z) <= 1e-5 * z, $"row {r}: normaliser {mixed.SumExp[r]} vs {z}");
            }
            var top = Enumerable.Range(0, vocab).OrderByDescending(v => l[v]).ThenBy(v => v).Take(candidates).ToArray();
            Assert.Equal(top, mixed.Ids(r).ToArray());
        }

        // The same step with every penalty off: rows 1 and 2 share a prompt and a token, so without the
        // penalty they are equal, and row 1's penalty changed exactly its seen tokens (positive logits
        // divided by 1.3, negative ones multiplied).
        var plain = model.Decode(rows, [SelectMode.ArgMax, new(false, 0.7f, 1f, 5), new(false, 1.5f, 1f, 9)]);
        Assert.Equal(new SelectShape(false, false, candidates), plain.Shape);
        var unpenalised = new float[vocab];
        model.ReadLogitsRow(1, unpenalised);
        var seen = new HashSet<int>([.. second, 7]);
        for (int v = 0; v < vocab; v++)
        {
            float u = unpenalised[v];
            float expected = seen.Contains(v) ? (u > 0 ? u / 1.3f : u * 1.3f) : u;
            Assert.Equal(expected, logits[1][v]);
        }
        Assert.Equal(logits[2], unpenalised);
        Assert.True(model.RecordedGraphs <= before + 2, "two 3-row shapes (penalty on, off) record two graphs");
    }

    [Fact]
    public void Selection_settings_the_device_cannot_use_are_refused_before_any_launch()
    {
        using var device = ComputeDevice.Create(DeviceKind.Cpu);
        using var model = LlamaModel.Load(device, GoldenFixture.Directory, new EngineOptions { MaxBatchSize = 2, MaxSeqLen = 16 });
        var row = new[] { new DecodeRow(0, 0, 1) };
        foreach (var bad in new SelectMode[] { new(false, 0f, 1f, 4), new(false, float.NaN, 1f, 4), new(true, 1f, 0f, 0), new(true, 1f, float.PositiveInfinity, 0), new(false, 1f, 1f, 0), new(false, 1f, 1f, 100_000) })
            Assert.Throws<EngineArgumentException>(() => model.Decode(row, bad));
        var e = Assert.Throws<EngineArgumentException>(() => model.Decode(row, [SelectMode.ArgMax, SelectMode.ArgMax]));
        Assert.Contains("one per row", e.Message);
    }
}
