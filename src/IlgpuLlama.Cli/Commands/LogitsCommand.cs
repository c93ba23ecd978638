using System.CommandLine;
using IlgpuLlama.Cli.Infrastructure;
using IlgpuLlama.Device;
using IlgpuLlama.Engine;
using IlgpuLlama.IO;

namespace IlgpuLlama.Cli.Commands;

/// <summary>
/// <c>ilgpu-llama logits</c>: float32 logits [tokens, vocab] of a token sequence as a .npy file
/// (row t predicts token t+1). prefill = one forward pass over all tokens (GEMM path); decode =
/// token by token through the KV cache (GEMV path). The two must agree.
/// </summary>
public static class LogitsCommand
{
    /// <summary>Builds the command.</summary>
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model directory, .gguf file or ollama:NAME[:TAG]", Required = true, HelpName = "DIR|GGUF" };
        var tokens = new Option<string>("--tokens") { Description = "Token ids, e.g. 128000,9906,4435", Required = true };
        var output = new Option<FileInfo>("--out") { Description = "Output .npy file (float32 [tokens, vocab])", Required = true, HelpName = "FILE.npy" };
        var mode = new Option<string>("--mode") { Description = "prefill (one pass) or decode (token by token)", DefaultValueFactory = _ => "prefill", HelpName = "prefill|decode" };
        mode.AcceptOnlyFromAmong("prefill", "decode");
        var engine = new ModelOptions();
        var command = new Command("logits", "Write the logits of every position of a token sequence to a NumPy .npy file") { model, tokens, output, mode };
        engine.AddTo(command);
        command.SetAction(parse =>
        {
            var io = CommandIO.From(parse);
            var ids = ModelOptions.ParseTokens(parse.GetValue(tokens)!);
            string dir = ModelOptions.ResolveModelDir(parse.GetValue(model), io, allowDemo: false);
            // Checked before the model loads: a target that cannot be written fails in a second, not after the forward pass.
            string target = OutputFile.Prepare(parse.GetValue(output)!.FullName);
            // The cache must hold the whole sequence; one slot is enough.
            var options = engine.Engine(parse, io, maxSeqOverride: Math.Max(parse.GetValue(engine.MaxSeqLen) ?? 256, ids.Length)) with { MaxBatchSize = 1 };
            using var device = ComputeDevice.Create(parse.GetValue(engine.Device));
            using var llama = ModelOptions.Load(device, dir, options, io);
            int vocab = llama.Config.VocabSize;
            var logits = new float[(long)ids.Length * vocab];
            var sw = System.Diagnostics.Stopwatch.StartNew();
            if (parse.GetValue(mode) == "prefill")
            {
                llama.PrefillLogits([new SequenceInput(0, 0, ids)], (_, pos, row) => row.CopyTo(logits.AsSpan(pos * vocab, vocab)));
            }
            else
            {
                for (int t = 0; t < ids.Length; t++)
                {
                    llama.Decode([new DecodeRow(0, t, ids[t])], SelectMode.ArgMax);
                    llama.ReadLogitsRow(0, logits.AsSpan(t * vocab, vocab));
                }
            }
            io.Err.WriteLine($"{parse.GetValue(mode)}: {ids.Length} positions in {sw.Elapsed.TotalMilliseconds:F1} ms");
            int bad = Array.FindIndex(logits, x => !float.IsFinite(x));
            if (bad >= 0)
                throw new InvalidOperationException(
                    $"the logits hold NaN or infinite values (first at position {bad / vocab}, token {bad % vocab}); nothing was written to {target}. " +
                    "The weights or the --dtype overflow; try --dtype bf16 or check the checkpoint");
            NpyFile.Write(target, logits, [ids.Length, vocab]);
            io.Err.WriteLine($"wrote {target} (float32 [{ids.Length}, {vocab}])");
            return 0;
        });
        return command;
    }
}
