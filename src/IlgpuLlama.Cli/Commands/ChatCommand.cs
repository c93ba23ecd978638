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
/// Commands: /reset starts over, /exit (or end of input) quits; any other /word prints
/// <see cref="CommandHelp"/> instead of reaching the model.
/// </summary>
public static class ChatCommand
{
    /// <summary>The line printed for /help and for an unknown command.</summary>
    public const string CommandHelp = "commands: /reset starts over, /exit quits (so does end of input), /help shows this; start a message with // to send one that begins with /";

    /// <summary>What one input line asks for.</summary>
    public enum LineKind
    {
        /// <summary>Text for the model.</summary>
        Message,

        /// <summary>Nothing to do (a blank line).</summary>
        Empty,

        /// <summary>/reset</summary>
        Reset,

        /// <summary>/exit, /quit or end of input.</summary>
        Exit,

        /// <summary>/help (text empty) or a /command that does not exist (text = the command): print <see cref="CommandHelp"/>.</summary>
        Help,
    }

    /// <summary>
    /// Classifies an input line (null = end of input). A line starting with // is a message with
    /// one slash removed, so text that begins with / can still be sent.
    /// </summary>
    public static (LineKind Kind, string Text) ClassifyLine(string? line)
    {
        if (line is null)
            return (LineKind.Exit, "");
        string trimmed = line.Trim();
        if (trimmed.Length == 0)
            return (LineKind.Empty, "");
        if (trimmed.StartsWith("//", StringComparison.Ordinal))
            return (LineKind.Message, trimmed[1..]);
        if (!trimmed.StartsWith('/'))
            return (LineKind.Message, line);
        return trimmed.ToLowerInvariant() switch
        {
            "/reset" => (LineKind.Reset, ""),
            "/exit" or "/quit" => (LineKind.Exit, ""),
            "/help" => (LineKind.Help, ""),
            _ => (LineKind.Help, trimmed),
        };
    }

    /// <summary>Builds the command; <paramref name="input"/> supplies the lines typed (standard input by default).</summary>
    public static Command Create(Func<TextReader>? input = null)
    {
        input ??= () => Console.In;
        var model = new Option<string?>("--model") { Description = "Instruct model directory (default: weights/Llama-3.2-1B-Instruct, else weights/Llama-3.2-1B, else the demo)", HelpName = "DIR" };
        var system = new Option<string?>("--system") { Description = "System prompt" };
        var date = new Option<string?>("--date") { Description = "Date for the template's 'Today Date' line, yyyy-MM-dd (default: today), for reproducible output" };
        var maxNew = CliOptions.Integer("--max-new-tokens", "Reply length limit", 256, 1);
        var special = new Option<bool>("--special") { Description = "Print special tokens by name in replies; by default they print nothing" };
        var sampling = new SamplingFlags();
        var engine = new ModelOptions();
        var command = new Command("chat", "Interactive chat with the Llama 3 Instruct template") { model, system, date, maxNew, special };
        sampling.AddTo(command);
        engine.AddTo(command);
        command.SetAction(parse =>
        {
            var io = CommandIO.From(parse);
            var samplingOptions = sampling.Parse(parse);
            DateOnly? day = parse.GetValue(date) is { } d
                ? (DateOnly.TryParseExact(d, "yyyy-MM-dd", out var parsed) ? parsed : throw new ArgumentException($"--date '{d}' is not yyyy-MM-dd"))
                : null;
            string dir = ModelOptions.ResolveModelDir(parse.GetValue(model), io, allowDemo: true, ModelOptions.ChatModelDirs, out _);
            bool includeSpecial = parse.GetValue(special);
            var tokenizer = ModelOptions.LoadTokenizer(dir);
            using var device = ComputeDevice.Create(parse.GetValue(engine.Device));
            using var llama = ModelOptions.Load(device, dir, engine.Engine(parse, io) with { MaxBatchSize = 1 }, io);
            var stops = new HashSet<int>(llama.Config.EosTokenIds.Concat(tokenizer.StopIds));
            var generator = new Generator(llama);
            var messages = new List<ChatMessage>();
            if (parse.GetValue(system) is { Length: > 0 } s)
                messages.Add(new ChatMessage("system", s));
            int systemCount = messages.Count;
            var cached = new List<int>();
            var reader = input();
            io.Err.WriteLine("chat: type a message; /reset starts over, /exit quits, /help lists the commands");
            while (true)
            {
                io.Out.Write("> ");
                io.Out.Flush();
                var (kind, text) = ClassifyLine(reader.ReadLine());
                if (kind == LineKind.Exit)
                    break;
                if (kind == LineKind.Empty)
                    continue;
                if (kind == LineKind.Help)
                {
                    io.Err.WriteLine(text.Length == 0 ? CommandHelp : $"unknown command {text}; {CommandHelp}");
                    continue;
                }
                if (kind == LineKind.Reset)
                {
                    messages.RemoveRange(systemCount, messages.Count - systemCount);
                    cached.Clear();
                    io.Err.WriteLine("(conversation cleared)");
                    continue;
                }
                messages.Add(new ChatMessage("user", text));
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
                var decoder = new StreamingDecoder(tokenizer, includeSpecial);
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
                // Special tokens are left out of the history: the template would re-encode their names as plain text.
                messages.Add(new ChatMessage("assistant", tokenizer.Decode(reply.Where(t => !stops.Contains(t)), includeSpecial: false)));
                // The cache now holds the prompt and every generated token but the last (never fed back).
                cached = [.. full, .. reply.Take(reply.Count - 1)];
                io.Err.WriteLine($"[{result.DecodeTokensPerSecond:F1} tok/s, {cached.Count}/{llama.MaxSeq} positions used]");
            }
            return 0;
        });
        return command;
    }
}
