using System.CommandLine;
using IlgpuLlama.Cli.Infrastructure;
using IlgpuLlama.Device;
using IlgpuLlama.Engine;
using IlgpuLlama.Engine.Serving;
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

    /// <summary>
    /// The conversation's prompt tokens with the oldest turns (a user message and the reply to it)
    /// dropped until the prompt leaves <paramref name="room"/> positions of <paramref name="maxSeq"/>
    /// for the reply; the first <paramref name="systemCount"/> messages (the system prompt) and the
    /// last (the new message) always stay. Returns the tokens and the turns dropped from
    /// <paramref name="messages"/>; null tokens (and <paramref name="messages"/> untouched) when even
    /// the system prompt and the new message alone leave no position for a reply.
    /// </summary>
    public static (List<int>? Tokens, int Dropped) FitContext(List<ChatMessage> messages, int systemCount, Func<IReadOnlyList<ChatMessage>, List<int>> encode,
        int maxSeq, int room)
    {
        ArgumentNullException.ThrowIfNull(messages);
        ArgumentNullException.ThrowIfNull(encode);
        var trial = new List<ChatMessage>(messages);
        var tokens = encode(trial);
        int dropped = 0;
        // Whole turns go, oldest first: the message after the system prompt and, unless it is the new one, its reply.
        while (tokens.Count > maxSeq - room && trial.Count - systemCount > 1)
        {
            int take = Math.Min(2, trial.Count - systemCount - 1);
            trial.RemoveRange(systemCount, take);
            dropped++;
            tokens = encode(trial);
        }
        if (tokens.Count >= maxSeq)
            return (null, 0);
        messages.Clear();
        messages.AddRange(trial);
        return (tokens, dropped);
    }

    /// <summary>
    /// Builds the command; <paramref name="input"/> supplies the lines typed (standard input by
    /// default), <paramref name="interrupts"/> the Ctrl-Cs (the console's by default).
    /// </summary>
    public static Command Create(Func<TextReader>? input = null, Func<Interrupts>? interrupts = null)
    {
        input ??= () => Console.In;
        interrupts ??= Interrupts.FromConsole;
        var model = new Option<string?>("--model") { Description = "Instruct model directory, .gguf file or ollama:NAME[:TAG] (default: weights/Llama-3.2-1B-Instruct, else weights/Llama-3.2-1B, else the demo)", HelpName = "DIR|GGUF" };
        var system = new Option<string?>("--system") { Description = "System prompt" };
        var date = new Option<string?>("--date") { Description = "Date for the template's 'Today Date' line, yyyy-MM-dd (default: today), for reproducible output" };
        var maxNew = CliOptions.Integer("--max-new-tokens", "Reply length limit", 256, 1);
        var special = new Option<bool>("--special") { Description = "Print special tokens by name in replies; by default they print nothing" };
        var sampling = new SamplingFlags();
        var engine = new ModelOptions();
        var command = new Command("chat", "Interactive chat with the Llama 3 Instruct template (Ctrl-C stops a reply; at the prompt, or twice quickly, it exits)")
        {
            model, system, date, maxNew, special,
        };
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
            int maxNewFlag = parse.GetValue(maxNew);
            var tokenizer = ModelOptions.LoadTokenizer(dir);
            using var device = ComputeDevice.Create(parse.GetValue(engine.Device));
            using var llama = ModelOptions.Load(device, dir, engine.Engine(parse, io) with { MaxBatchSize = 1 }, io);
            // As --seed's help says (and generate does): the seed of a sampled chat, so a session can be replayed.
            if (!samplingOptions.IsGreedy)
                io.Err.WriteLine($"seed: {samplingOptions.Seed}");
            var stops = new HashSet<int>(llama.Config.EosTokenIds.Concat(tokenizer.StopIds));
            var generator = new Generator(llama);
            var messages = new List<ChatMessage>();
            if (parse.GetValue(system) is { Length: > 0 } s)
                messages.Add(new ChatMessage("system", s));
            int systemCount = messages.Count;
            // A reply gets at least this much room: older turns are dropped to make it.
            int room = Math.Max(1, Math.Min(maxNewFlag, llama.MaxSeq / 2));
            var cached = new List<int>();
            var reader = new InterruptibleReader(input());
            using var ctrlC = interrupts();
            io.Err.WriteLine("chat: type a message; /reset starts over, /exit quits, /help lists the commands; Ctrl-C stops a reply, at the prompt (or twice quickly) it exits");
            while (!ctrlC.ExitRequested)
            {
                io.Out.Write("> ");
                io.Out.Flush();
                if (!reader.TryReadLine(ctrlC.After(ctrlC.Count), out string? line))
                {
                    io.Out.WriteLine();
                    io.Err.WriteLine("(Ctrl-C: exiting)");
                    break;
                }
                var (kind, text) = ClassifyLine(line);
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
                var (full, dropped) = FitContext(messages, systemCount, m => ChatTemplate.Encode(tokenizer, m, addGenerationPrompt: true, day), llama.MaxSeq, room);
                if (full is null)
                {
                    messages.RemoveAt(messages.Count - 1);
                    io.Err.WriteLine($"error: this message does not fit --max-seq-len {llama.MaxSeq} even without the earlier turns; send a shorter one or restart with a larger --max-seq-len");
                    continue;
                }
                if (dropped > 0)
                    io.Err.WriteLine($"(context full: dropped the {dropped} oldest turn{(dropped == 1 ? "" : "s")} to fit --max-seq-len {llama.MaxSeq}" +
                        $"{(systemCount > 0 ? ", kept the system prompt" : "")}; {full.Count} positions in use)");
                int keep = 0;
                while (keep < cached.Count && keep < full.Count - 1 && cached[keep] == full[keep])
                    keep++;
                int maxNewTokens = Math.Min(maxNewFlag, llama.MaxSeq - full.Count);
                var decoder = new StreamingDecoder(tokenizer, includeSpecial);
                var reply = new List<int>();
                long replyMark = ctrlC.Count;
                var stopReply = ctrlC.After(replyMark);
                GenerationResult? result = null;
                try
                {
                    result = generator.Generate([full.Skip(keep).ToArray()],
                        new GenerationSettings { MaxNewTokens = maxNewTokens, Sampling = samplingOptions, StopTokens = stops },
                        (_, token) =>
                        {
                            // Checked before the token is shown: a stopped reply ends with the last token printed.
                            stopReply.ThrowIfCancellationRequested();
                            reply.Add(token);
                            if (!stops.Contains(token))
                            {
                                io.Out.Write(decoder.Push(token));
                                io.Out.Flush();
                            }
                        },
                        startPositions: [keep]);
                }
                catch (OperationCanceledException) when (stopReply.IsCancellationRequested)
                {
                }
                io.Out.WriteLine(decoder.Flush());
                // Special tokens are left out of the history: the template would re-encode their names as plain text.
                messages.Add(new ChatMessage("assistant", tokenizer.Decode(reply.Where(t => !stops.Contains(t)), includeSpecial: false)));
                if (result is null)
                {
                    // Stopped: every token kept was fed back through the model, so the cache holds them all.
                    cached = [.. full, .. reply];
                    io.Err.WriteLine($"(reply stopped by Ctrl-C after {reply.Count} tokens; Ctrl-C at the prompt, or twice quickly, exits; {cached.Count}/{llama.MaxSeq} positions used)");
                    if (ctrlC.ExitRequested)
                        io.Err.WriteLine("(Ctrl-C twice: exiting)");
                    continue;
                }
                // The cache now holds the prompt and every generated token but the last (never fed back).
                cached = [.. full, .. reply.Take(reply.Count - 1)];
                string cut = result.Sequences[0].FinishReason != FinishReason.Length ? ""
                    : maxNewTokens < maxNewFlag
                        ? $"; reply cut: the context is full at --max-seq-len {llama.MaxSeq} (the next message drops the oldest turns)"
                        : $"; reply cut at --max-new-tokens {maxNewFlag}";
                io.Err.WriteLine($"[{result.DecodeTokensPerSecond:F1} tok/s, {cached.Count}/{llama.MaxSeq} positions used{cut}]");
            }
            return 0;
        });
        return command;
    }

    /// <summary>
    /// Reads lines on a worker so that waiting for one can be cut short by Ctrl-C (a console read
    /// cannot be cancelled); a line that arrives after an interrupt is kept for the next read.
    /// </summary>
    sealed class InterruptibleReader(TextReader reader)
    {
        Task<string?>? pending;

        /// <summary>False when <paramref name="interrupted"/> fired first; <paramref name="line"/> is null at end of input.</summary>
        public bool TryReadLine(CancellationToken interrupted, out string? line)
        {
            line = null;
            pending ??= Task.Run(reader.ReadLine);
            try
            {
                pending.Wait(interrupted);
            }
            catch (OperationCanceledException) when (interrupted.IsCancellationRequested)
            {
                return false;
            }
            line = pending.Result;
            pending = null;
            return true;
        }
    }
}
