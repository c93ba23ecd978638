using System.CommandLine;
using IlgpuLlama.Cli.Infrastructure;
using IlgpuLlama.Device;
using IlgpuLlama.Engine;
using IlgpuLlama.Model;
using IlgpuLlama.Text;

namespace IlgpuLlama.Cli.Commands;

/// <summary>
/// <c>ilgpu-llama perplexity --model DIR --file F [--ctx N] [--json]</c>: the perplexity of a text as
/// llama-perplexity computes it (<see cref="Perplexity"/>): BOS first, windows of --ctx tokens
/// (default min(512, the model's or --max-seq-len's context)) run --max-batch-size at a time, the
/// second half of each window scored; a text that fits one window has every token after BOS scored.
/// </summary>
public static class PerplexityCommand
{
    /// <summary>Window length when --ctx is not given (llama-perplexity's default), capped by the context available.</summary>
    public const int DefaultContext = 512;

    /// <summary>The JSON shape of <c>perplexity --json</c>; the uncertainty is null with a single scored token.</summary>
    public sealed record PerplexityJson(string Model, double Perplexity, double NllMean, double? PerplexityUncertainty, int TokensScored, int Ctx, int Windows,
        int TextTokens, long TokensEvaluated, double Seconds, double TokensPerSecond);

    /// <summary>Builds the command; <paramref name="input"/> is read for <c>--file -</c>.</summary>
    public static Command Create(Func<TextReader> input)
    {
        var model = new Option<string?>("--model") { Description = $"Model directory, .gguf file or ollama:NAME[:TAG] (default: {ModelOptions.DefaultModelDir})", HelpName = "DIR|GGUF" };
        var file = new Option<string>("--file") { Description = "UTF-8 text to score; - reads standard input", Required = true, HelpName = "FILE|-" };
        var ctx = CliOptions.OptionalInteger("--ctx", $"Tokens per window (default: {DefaultContext}, or less when --max-seq-len or the model's context is shorter)", 2);
        ctx.HelpName = "N";
        var json = CliOptions.Json();
        var engine = new ModelOptions();
        var command = new Command("perplexity", "Perplexity of a text file (llama-perplexity's windows: BOS first, the second half of each window scored)")
        {
            model, file, ctx, json,
        };
        engine.AddTo(command);
        command.SetAction(parse =>
        {
            var io = CommandIO.From(parse);
            string text = TokenizeCommand.ReadFile(parse.GetValue(file)!, input);
            string dir = ModelOptions.ResolveModelDir(parse.GetValue(model), io, allowDemo: false);
            var config = ModelLocation.Config(dir);
            var tokenizer = LlamaTokenizer.FromModel(dir);
            var tokens = tokenizer.Encode(text, addBos: true);

            int? seqFlag = parse.GetValue(engine.MaxSeqLen);
            bool seqGiven = seqFlag is not null;
            int available = seqFlag ?? config.MaxPositionEmbeddings;
            int window = parse.GetValue(ctx) ?? Math.Min(DefaultContext, available);
            if (seqGiven && window > available)
                throw new ArgumentException($"--ctx {window} exceeds --max-seq-len {available}; lower --ctx or raise --max-seq-len");
            var windows = Perplexity.Windows(tokens.Count, window);
            io.Err.WriteLine($"{tokens.Count:N0} tokens, {windows.Count} window(s) of {windows[0].Length} ({windows.Sum(w => w.Scored):N0} tokens scored), " +
                (tokens.Count > window ? $"{tokens.Count - windows.Count * window:N0} trailing tokens not scored" : "every token after BOS scored"));

            // The cache holds one window per slot; no more slots than windows.
            var options = engine.Engine(parse, io, maxSeqOverride: seqGiven ? available : windows[0].Length) with
            {
                MaxBatchSize = Math.Min(parse.GetValue(engine.MaxBatchSize), windows.Count),
            };
            using var device = ComputeDevice.Create(parse.GetValue(engine.Device));
            using var llama = ModelOptions.Load(device, dir, options, io);
            var bar = new ProgressBar(io, "tokens", "tok/s");
            var result = Perplexity.Score(llama, tokens, window, tokenizer.BosId, new SyncProgress<PerplexityProgress>(p => bar.Report(p.TokensDone, p.Tokens, p.TokensPerSecond)));
            bar.Finish();

            if (parse.GetValue(json))
            {
                io.WriteJson(new PerplexityJson(dir, result.Perplexity, result.NllMean, double.IsFinite(result.PerplexityUncertainty) ? result.PerplexityUncertainty : null,
                    result.TokensScored, result.Context, result.Windows, result.TextTokens, result.TokensEvaluated, result.Seconds, result.TokensPerSecond));
            }
            else
            {
                string plusMinus = double.IsFinite(result.PerplexityUncertainty) ? $" +/- {result.PerplexityUncertainty:F4}" : "";
                io.Out.WriteLine($"perplexity {result.Perplexity:F4}{plusMinus} (mean NLL {result.NllMean:F4} over {result.TokensScored:N0} tokens, {result.Windows} window(s) of {windows[0].Length})");
                io.Out.Flush();
            }
            io.Err.WriteLine($"{result.TokensEvaluated:N0} tokens in {result.Seconds:F2} s, {result.TokensPerSecond:F1} tok/s");
            return 0;
        });
        return command;
    }
}
