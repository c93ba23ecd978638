using ILGPU.Runtime.CPU;
using IlgpuLlama.Device;
using IlgpuLlama.Engine;
using IlgpuLlama.Kernels;
using IlgpuLlama.Model;
using Xunit.Abstractions;

namespace IlgpuLlama.Tests.Model;

/// <summary>
/// The persistent decode variant (one launch per layer, DecodeLayerKernels) computes the fused-norm
/// step's function: on the golden model (the demo model for the block formats), for every weight
/// format, at warps of 1 (the engine's CPU device) and 2, with 1, 2 and 7 persistent groups and
/// batches of 1 to 4 and 6, its logits equal the fused-norm path's, bit for bit where both use the
/// same group size (one lane) and within fp32 reassociation otherwise (its tasks run with the
/// attention group size, the per-operation matvecs with their own). Warps of 4 and 32 are checked
/// layer by layer in DecodeLayerTests (a whole model at warp 32 takes minutes on the CPU accelerator).
/// </summary>
public sealed class PersistentDecodeTests(ITestOutputHelper output)
{
    const int Steps = 3;

    static ComputeDevice Device(int warp) => warp switch
    {
        1 => ComputeDevice.Create(DeviceKind.Cpu),
        32 => ComputeDevice.CreateCpu(new CPUDevice(32, 1, 1)),
        _ => ComputeDevice.CreateCpu(new CPUDevice(warp, 2, 2)),
    };

    /// <summary>Prefill <paramref name="prompts"/>, then decode <paramref name="steps"/> steps fed with <paramref name="forced"/>'s tokens (or its own greedy ones when null); every step's logits.</summary>
    static (int[][] Tokens, float[][][] Logits) Run(LlamaModel llama, int[][] prompts, int[][]? forced, int steps = Steps)
    {
        int n = prompts.Length, vocab = llama.Config.VocabSize;
        var tokens = prompts.Select(_ => new List<int>()).ToArray();
        var logits = prompts.Select(_ => new float[steps + 1][]).ToArray();
        var result = llama.Prefill(prompts.Select((p, i) => new SequenceInput(i, 0, p)).ToArray(), SelectMode.ArgMax);
        for (int step = 0; ; step++)
        {
            for (int i = 0; i < n; i++)
            {
                logits[i][step] = new float[vocab];
                llama.ReadLogitsRow(i, logits[i][step]);
                tokens[i].Add(result.ArgMax[i]);
            }
            if (step == steps)
                break;
            var rows = prompts.Select((p, i) => new DecodeRow(i, p.Length + step, forced?[i][step] ?? tokens[i][^1])).ToArray();
            result = llama.Decode(rows, SelectMode.ArgMax);
        }
        return (tokens.Select(t => t.ToArray()).ToArray(), logits);
    }

    static int[][] Prompts(int count, int vocab)
    {
        var tokens = GoldenFixture.Cases.SelectMany(c => c.AllTokens).Select(t => t % vocab).ToArray();
        return Enumerable.Range(0, count).Select(i => tokens.Skip(i * 3).Take(3 + i).ToArray()).ToArray();
    }

    /// <summary>
    /// Warps of one lane (the engine's CPU device) run every task with the per-operation kernels'
    /// group size, so the logits must be bit for bit the fused-norm path's; wider warps give the
    /// persistent tasks the attention group size, so they must agree within fp32 reassociation, and
    /// pick the same token wherever the fused path's top two logits are not within 1e-3.
    /// fp16 and bf16 run the golden model, the block formats the demo model (whole 32-weight blocks).
    /// </summary>
    [Theory]
    [InlineData(1, 2, "fp16", 6, 3)]
    [InlineData(1, 1, "bf16", 4, 3)]
    [InlineData(1, 7, "q8_0", 3, 3)]
    [InlineData(1, 2, "q4_0", 2, 3)]
    [InlineData(1, 7, "fp16", 1, 3)]
    [InlineData(2, 7, "fp16", 1, 1)]
    public void Its_logits_equal_the_fused_norm_steps(int warp, int groups, string dtype, int batch, int steps)
    {
        var format = WeightFormat.Parse(dtype);
        string? demo = null;
        try
        {
            string dir = GoldenFixture.Directory;
            if (format is BlockQuantFormat)
            {
                demo = Cli.CliHarness.TempDir();
                DemoModel.Write(demo);
                dir = demo;
            }
            using var device = Device(warp);
            var tuning = KernelTuning.For(device.Accelerator) with { AttentionMinChunk = 3, PersistentGroups = groups };
            EngineOptions Options(DecodeVariant v) => new() { MaxBatchSize = batch, MaxSeqLen = 24, DecodeVariant = v, Tuning = tuning, WeightFormat = format };
            using var fused = LlamaModel.Load(device, dir, Options(DecodeVariant.FusedNorm));
            var prompts = Prompts(batch, fused.Config.VocabSize);
            var (tokens, expected) = Run(fused, prompts, null, steps);
            using var persistent = LlamaModel.Load(device, dir, Options(DecodeVariant.Persistent));
            Assert.Equal(2 + persistent.Config.NumHiddenLayers + 1 + 2, persistent.DecodeLaunchesPerStep);
            var (chosen, actual) = Run(persistent, prompts, tokens, steps);
            double worst = 0;
            for (int i = 0; i < batch; i++)
            {
                for (int step = 0; step <= steps; step++)
                {
                    var e = expected[i][step];
                    var a = actual[i][step];
                    for (int v = 0; v < e.Length; v++)
                        worst = Math.Max(worst, Math.Abs(a[v] - e[v]) / (1 + Math.Abs(e[v])));
                    if (warp == 1)
                        Assert.Equal(e, a); // the same group sizes: the same reductions
                    else if (Margin(e) > 1e-3)
                        Assert.Equal(tokens[i][step], chosen[i][step]);
                }
            }
            output.WriteLine($"warp {warp}, {groups} groups, {dtype}, batch {batch}: max relative logit difference {worst:G3}");
            Assert.True(worst <= 1e-4, $"persistent logits differ from fused-norm by {worst:G3} (relative)");
        }
        finally
        {
            if (demo is not null)
                Directory.Delete(demo, recursive: true);
        }
    }

    /// <summary>The gap between the two largest logits.</summary>
    static double Margin(float[] logits)
    {
        float first = float.NegativeInfinity, second = float.NegativeInfinity;
        foreach (float v in logits)
        {
            if (v > first)
                (first, second) = (v, first);
            else if (v > second)
                second = v;
        }
        return first - second;
    }

    /// <summary>Decode steps at positions past 256 (a long prefill first), bit for bit the fused-norm path's.</summary>
    [Fact]
    public void Past_256_positions_it_equals_the_fused_norm_step()
    {
        using var device = ComputeDevice.Create(DeviceKind.Cpu);
        var tokens = GoldenFixture.Cases.SelectMany(c => c.AllTokens).ToArray();
        var prompt = Enumerable.Range(0, 258).Select(i => tokens[i % tokens.Length]).ToArray();
        EngineOptions Options(DecodeVariant v) => new() { MaxBatchSize = 1, MaxSeqLen = 264, DecodeVariant = v };
        using var fused = LlamaModel.Load(device, GoldenFixture.Directory, Options(DecodeVariant.FusedNorm));
        var (greedy, expected) = Run(fused, [prompt], null);
        using var persistent = LlamaModel.Load(device, GoldenFixture.Directory, Options(DecodeVariant.Persistent));
        var (chosen, actual) = Run(persistent, [prompt], [greedy[0]]);
        for (int step = 0; step <= Steps; step++)
            Assert.Equal(expected[0][step], actual[0][step]);
        Assert.Equal(greedy[0], chosen[0]);
    }

    /// <summary>
    /// The deadlock argument, checked on the task list: every task waits only for tasks with smaller
    /// tickets (all of the previous stage), so the smallest unfinished ticket never waits; and the
    /// stages tile the tickets in order, each task's index running over its stage's groups once.
    /// </summary>
    [Theory]
    [InlineData(96, 344, 1, 1)]
    [InlineData(96, 344, 6, 3)]
    [InlineData(2048, 8192, 4, 8)]
    public void A_task_never_waits_for_a_later_task(int hidden, int intermediate, int batch, int splits)
    {
        var shape = new AttentionShape(32, 8, 64, 256);
        var tasks = DecodeLayerKernels.Tasks(hidden, intermediate, batch, splits, shape);
        Assert.Equal((shape.QDim + 2 * shape.KvDim) / 2, tasks.Qkv);
        Assert.Equal(batch * shape.KvHeads * splits, tasks.Attention);
        var seen = new int[DecodeLayerKernels.Stages];
        for (int t = 0; t < tasks.Total; t++)
        {
            int stage = tasks.Stage(t);
            int index = t - tasks.First(stage);
            Assert.Equal(seen[stage]++, index); // each stage's tasks in order, none skipped or repeated
            Assert.True(stage == 0 || tasks.First(stage - 1) + tasks.Count(stage - 1) <= t,
                $"ticket {t} (stage {stage}) waits for a task of stage {stage - 1} with a ticket at or after it");
            if (stage > 0)
                Assert.Equal(tasks.First(stage), tasks.First(stage - 1) + tasks.Count(stage - 1));
        }
        for (int s = 0; s < DecodeLayerKernels.Stages; s++)
            Assert.Equal(tasks.Count(s), seen[s]);
    }
}
