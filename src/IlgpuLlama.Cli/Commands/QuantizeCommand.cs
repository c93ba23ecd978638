using System.CommandLine;
using IlgpuLlama.Cli.Infrastructure;
using IlgpuLlama.Device;
using IlgpuLlama.Kernels;
using IlgpuLlama.Model;

namespace IlgpuLlama.Cli.Commands;

/// <summary>
/// <c>ilgpu-llama quantize --model DIR --dtype q8_0|q4_0 --out DIR2</c>: writes a model directory
/// whose matrices are stored in a ggml block format (quants as I8/U8 tensors, fp16 scales as
/// "name.scales"), which every model command then loads without quantising again. The output
/// appears only when complete: it is written beside it under a temporary name and renamed; any
/// failure or Ctrl-C removes the temporary directory.
/// </summary>
public static class QuantizeCommand
{
    /// <summary>The JSON shape of <c>quantize --json</c>.</summary>
    public sealed record QuantizeJson(string Directory, string Format, IReadOnlyList<string> Files, long SourceBytes, long WeightBytes, double Seconds);

    /// <summary>Builds the command.</summary>
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Hugging Face Llama 3 model directory (BF16, F16 or F32 safetensors)", Required = true, HelpName = "DIR" };
        var blockFormats = WeightFormat.All.OfType<BlockQuantFormat>().ToArray();
        var dtype = new Option<string>("--dtype")
        {
            Description = "Block format or K-quant mix: " + string.Join("; ", blockFormats.Select(f => $"{f.Name} = {f.Description}").Concat(WeightMix.All.Select(m => $"{m.Name} = {m.Description}"))),
            Required = true,
            HelpName = string.Join("|", blockFormats.Select(f => f.Name).Concat(WeightMix.All.Select(m => m.Name))),
        };
        dtype.AcceptOnlyFromAmong([.. blockFormats.Select(f => f.Name), .. WeightMix.All.Select(m => m.Name)]);
        var output = new Option<string>("--out") { Description = "New model directory to write (must not exist)", Required = true, HelpName = "DIR2" };
        var shardMb = CliOptions.Integer("--max-shard-mb", "Largest safetensors shard in MiB (a matrix is never split)", (int)(CheckpointQuantizer.DefaultShardBytes >> 20), 1);
        var json = CliOptions.Json();
        var command = new Command("quantize", $"Write a model directory with {string.Join(", ", blockFormats.Select(f => f.Name.ToUpperInvariant()))} weights or a K-quant mix ({string.Join(", ", WeightMix.All.Select(m => m.Name.ToUpperInvariant()))}), loaded later without quantising again")
        {
            model, dtype, output, shardMb, json,
        };
        command.SetAction(parse =>
        {
            var io = CommandIO.From(parse);
            var mix = WeightMix.Find(parse.GetValue(dtype)!);
            var format = mix?.Main ?? (BlockQuantFormat)WeightFormat.Parse(parse.GetValue(dtype)!);
            string source = parse.GetValue(model)!, target = parse.GetValue(output)!;
            using var cancel = new CancellationTokenSource();
            // Ctrl-C, SIGTERM, SIGHUP and SIGQUIT cancel the work, whose failure path removes the temporary
            // directory; only SIGINT and SIGQUIT did (through the console), so the others left it behind.
            using var signals = IlgpuLlama.IO.TemporaryPaths.CancelOnSignals(cancel);
            var started = DateTime.UtcNow;
            int lastPercent = -1;
            var progress = new SyncProgress<(long Done, long Total)>(p =>
            {
                // Reported by the worker threads as chunks finish.
                lock (io.Err)
                {
                    int percent = p.Total == 0 ? 100 : (int)(p.Done * 100 / p.Total);
                    if (p.Total > (64 << 20) && (percent / 10 > lastPercent / 10 || (io.ErrIsTerminal && percent > lastPercent)))
                    {
                        lastPercent = percent;
                        double seconds = Math.Max(1e-3, (DateTime.UtcNow - started).TotalSeconds);
                        string line = $"  quantizing {DeviceAllocator.Gb(p.Done)} / {DeviceAllocator.Gb(p.Total)} [{new string('#', percent / 10)}{new string('.', 10 - percent / 10)}] {p.Done / seconds / 1e6:F0} MB/s";
                        // Redrawn in place on a terminal; redirected, one line per tenth (no carriage returns in a log).
                        if (io.ErrIsTerminal)
                            io.Err.Write($"\r{line}");
                        else
                            io.Err.WriteLine(line);
                    }
                }
            });
            QuantizeResult result;
            try
            {
                result = mix is null
                    ? CheckpointQuantizer.Quantize(source, format, target, progress, cancel.Token, (long)parse.GetValue(shardMb) << 20)
                    : CheckpointQuantizer.Quantize(source, mix, target, progress, cancel.Token, (long)parse.GetValue(shardMb) << 20);
            }
            catch (OperationCanceledException) when (cancel.IsCancellationRequested)
            {
                io.EndPartialLine();
                string by = signals.SignalName is { } name && name != "SIGINT" ? $" by {name}" : "";
                io.Err.WriteLine($"error: quantize interrupted{by}; nothing was written to {target}");
                return signals.ExitCode;
            }
            if (lastPercent >= 0 && io.ErrIsTerminal)
                io.Err.WriteLine();
            foreach (string w in result.Warnings)
                io.Err.WriteLine($"warning: {w}");
            double elapsed = (DateTime.UtcNow - started).TotalSeconds;
            if (parse.GetValue(json))
                io.WriteJson(new QuantizeJson(result.Directory, result.Name, result.Files, result.SourceBytes, result.WeightBytes, Math.Round(elapsed, 3)));
            else
                io.Out.WriteLine($"wrote {target}: {result.Name}, {result.WeightBytes:N0} B of weights ({DeviceAllocator.Gb(result.WeightBytes)}, from {DeviceAllocator.Gb(result.SourceBytes)}) in {result.Files.Count} files, {elapsed:F1} s; " +
                    $"run it with --model {target}");
            return 0;
        });
        return command;
    }
}
