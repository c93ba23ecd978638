using System.CommandLine;
using IlgpuLlama.Cli.Infrastructure;
using IlgpuLlama.Device;
using IlgpuLlama.Engine;
using IlgpuLlama.Text;

namespace IlgpuLlama.Cli.Commands;

/// <summary>
/// <c>ilgpu-llama chat</c>: interactive multi-turn chat with the Llama 3 Instruct template, streaming
/// replies. The conversation lives in one KV-cache slot: each turn prefills only the tokens that
/// are not already cached (the longest common prefix with what the cache holds is kept).
/// Commands: /reset starts over, /exit (or end of input) quits.
/// </summary>
public static class ChatCommand
{
    /// <summary>Builds the command.</summary>
    public static Command Create()
    {
        var model = new Option<string?>("--model") { Description = "Instruct model directory (default: weights/Llama-3.2-1B, else the demo)", HelpName = "DIR" };
        var system = new Option<string?>("--system") { Description = "System prompt" };
        var date = new Option<string?>("--date") { Description = "Date for the template's 'Today Date' line, yyyy-MM-dd (default: today), for reproducible output" };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Reply length limit", DefaultValueFactory = _ => 256 };
        var sampling = new SamplingFlags();
        var engine = new ModelOptions();
        var command = new Command("chat", "Interactive chat with the Llama 3 Instruct template") { model, system, date, maxNew };
        sampling.AddTo(command);
        engine.AddTo(command);
        command.SetAction(parse =>
        {
            var io = CommandIO.From(parse);
            var samplingOptions = sampling.Parse(parse);
            DateOnly? day = parse.GetValue(date) is { } d
                ? (DateOnly.TryParseExact(d, "yyyy-MM-dd", out var parsed) ? parsed : throw new ArgumentException($"--date '{d}' is not yyyy-MM-dd"))
                : null;
            string dir = ModelOptions.ResolveModelDir(parse.GetValue(model), io, allowDemo: true);
            var tokenizer = LlamaTokenizer.FromDirectory(dir);
            using var device = ComputeDevice.Create(parse.GetValue(engine.Device));
            using var llama = ModelOptions.Load(device, dir, engine.Engine(parse, io) with { MaxBatchSize = 1 }, io);
            var stops = new HashSet<int>(llama.Config.EosTokenIds.Concat(tokenizer.StopIds));
            var generator = new Generator(llama);
            var messages = new List<ChatMessage>();
            if (parse.GetValue(system) is { Length: > 0 } s)
                messages.Add(new ChatMessage("system", s));
            int systemCount = messages.Count;
            var cached = new List<int>();
            var input = Console.In;
            io.Err.WriteLine("chat: type a message; /reset starts over, /exit quits");
            while (true)
            {
                io.Out.Write("> ");
                io.Out.Flush();
                string? line = input.ReadLine();
                if (line is null || line.Trim() == "/exit")
                    break;
                if (line.Trim() == "/reset")
                {
                    messages.RemoveRange(systemCount, messages.Count - systemCount);
                    cached.Clear();
                    io.Err.WriteLine("(conversation cleared)");
                    continue;
                }
                if (line.Trim().Length == 0)
                    continue;
                messages.Add(new ChatMessage("user", line));
                var full = ChatTemplate.Encode(tokenizer, messages, addGenerationPrompt: true, day);
                int keep = 0;
                while (keep < cached.Count && keep < full.Count - 1 && cached[keep] == full[keep])
                    keep++;
                int maxNewTokens = Math.Min(parse.GetValue(maxNew), llama.MaxSeq - full.Count);
                if (maxNewTokens < 1)
                {
                    messages.RemoveAt(messages.Count - 1);
                    io.Err.WriteLine($"error: the conversation ({full.Count} tokens) fills --max-seq-len {llama.MaxSeq}; type /reset or restart with a larger --max-seq-len");
                    continue;
                }
                var decoder = new StreamingDecoder(tokenizer);
                var result = generator.Generate([full.Skip(keep).ToArray()],
                    new GenerationOptions { MaxNewTokens = maxNewTokens, Sampling = samplingOptions, StopTokens = stops, StartPositions = [keep] },
                    (_, token) =>
                    {
                        if (!stops.Contains(token))
                        {
                            io.Out.Write(decoder.Push(token));
                            io.Out.Flush();
                        }
                    });
                io.Out.WriteLine(decoder.Flush());
                var reply = result.Sequences[0].GeneratedTokens;
                messages.Add(new ChatMessage("assistant", tokenizer.Decode(reply.Where(t => !stops.Contains(t)))));
                // The cache now holds the prompt and every generated token but the last (never fed back).
                cached = [.. full, .. reply.Take(reply.Count - 1)];
                io.Err.WriteLine($"[{result.DecodeTokensPerSecond:F1} tok/s, {cached.Count}/{llama.MaxSeq} positions used]");
            }
            return 0;
        });
        return command;
    }
}
