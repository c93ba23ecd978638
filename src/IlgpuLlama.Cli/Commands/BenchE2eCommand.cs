using System.CommandLine;
using System.Diagnostics;
using IlgpuLlama.Cli.Bench;
using IlgpuLlama.Cli.Infrastructure;
using IlgpuLlama.Device;
using IlgpuLlama.Engine;
using IlgpuLlama.Model;
using Spectre.Console;

namespace IlgpuLlama.Cli.Commands;

/// <summary>
/// <c>ilgpu-llama bench e2e</c>: llama-bench style end-to-end throughput. For batch 1..max:
/// pp = prompt processing (prefill of --prompt-tokens per sequence), tg = text generation
/// (--gen-tokens decode steps, greedy, stop tokens ignored). A preset gets deterministic random
/// weights. Reports tok/s, ms per step and the weight bandwidth a decode step achieves.
/// </summary>
public static class BenchE2eCommand
{
    public sealed record Row(string Test, int Batch, int Tokens, double Seconds, double TokensPerSecond, double MsPerStep, double? WeightGbPerSecond);

    public sealed record Report(string Model, string Device, string Dtype, bool CudaGraph, long WeightBytes, int Repeats, IReadOnlyList<Row> Rows);

    /// <summary>Builds the command.</summary>
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model directory or preset (random weights)", Required = true, HelpName = "DIR|PRESET" };
        var promptTokens = new Option<int>("--prompt-tokens") { Description = "Prompt tokens per sequence (pp test)", DefaultValueFactory = _ => 128 };
        var genTokens = new Option<int>("--gen-tokens") { Description = "Generated tokens per sequence (tg test)", DefaultValueFactory = _ => 64 };
        var repeats = new Option<int>("--repeats") { Description = "Runs per test; the median is reported", DefaultValueFactory = _ => 3 };
        var json = CliOptions.Json();
        var engine = new ModelOptions();
        var command = new Command("e2e", "End-to-end prefill (pp) and decode (tg) tokens/s at batch 1..max") { model, promptTokens, genTokens, repeats, json };
        engine.AddTo(command);
        command.SetAction(parse =>
        {
            var io = CommandIO.From(parse);
            string name = parse.GetValue(model)!;
            int pp = parse.GetValue(promptTokens), tg = parse.GetValue(genTokens), reps = Math.Max(1, parse.GetValue(repeats));
            if (pp < 1 || tg < 1)
                throw new ArgumentException("--prompt-tokens and --gen-tokens must be at least 1");
            var options = engine.Engine(parse, io, maxSeqOverride: Math.Max(parse.GetValue(engine.MaxSeqLen), pp + tg + 1));
            using var device = ComputeDevice.Create(parse.GetValue(engine.Device));
            LlamaModel llama;
            if (Directory.Exists(name))
            {
                llama = ModelOptions.Load(device, name, options, io);
            }
            else
            {
                var config = LlamaConfig.Preset(name);
                llama = LlamaModel.Create(device, config, options);
                io.Err.WriteLine($"{name}: random weights on {device.Description}; {ModelOptions.MemorySummary(llama)}");
                llama.Weights.FillRandom(1, 0.05f, device.Accelerator);
            }
            using (llama)
            {
                var rows = new List<Row>();
                var rng = new Random(7);
                var generator = new Generator(llama);
                for (int b = 1; b <= llama.MaxBatch; b++)
                {
                    var prompts = Enumerable.Range(0, b).Select(_ => (IReadOnlyList<int>)Enumerable.Range(0, pp).Select(_ => rng.Next(llama.Config.VocabSize)).ToArray()).ToArray();
                    var gen = new GenerationOptions { MaxNewTokens = tg + 1 };
                    generator.Generate(prompts, gen with { MaxNewTokens = 2 }); // warm-up: kernels, graph capture
                    var ppTimes = new List<double>();
                    var tgTimes = new List<double>();
                    for (int r = 0; r < reps; r++)
                    {
                        var result = generator.Generate(prompts, gen);
                        ppTimes.Add(result.PrefillSeconds);
                        tgTimes.Add(result.DecodeSeconds / result.DecodeSteps);
                    }
                    double ppS = Statistics.Median(ppTimes), stepS = Statistics.Median(tgTimes);
                    rows.Add(new Row($"pp{pp}", b, b * pp, ppS, b * pp / ppS, ppS * 1000, null));
                    rows.Add(new Row($"tg{tg}", b, b * tg, stepS * tg, b / stepS, stepS * 1000, llama.Plan.WeightBytes / stepS / 1e9));
                    io.Err.WriteLine($"batch {b}: pp{pp} {b * pp / ppS:F1} tok/s, tg{tg} {b / stepS:F1} tok/s ({stepS * 1000:F2} ms/step)");
                }
                var report = new Report(name, device.Description, options.WeightFormat.Name, llama.UseGraphs, llama.Plan.WeightBytes, reps, rows);
                if (parse.GetValue(json))
                {
                    io.WriteJson(report);
                }
                else
                {
                    var console = CommandIO.Console(io.Out);
                    var t = new Table().AddColumns("model", "test", "batch", "tok/s", "ms/step", "weight GB/s");
                    foreach (var r in rows)
                        t.AddRow(Markup.Escape(name), r.Test, r.Batch.ToString(), $"{r.TokensPerSecond:F1}", $"{r.MsPerStep:F2}", r.WeightGbPerSecond is { } g ? $"{g:F1}" : "");
                    console.Write(t);
                    console.WriteLine($"{device.Description}; {report.Dtype} weights; decode launches: {(llama.UseGraphs ? "graph replay" : "one by one")}; median of {reps}");
                }
            }
            return 0;
        });
        return command;
    }
}
