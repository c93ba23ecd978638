using System.Text;
using System.Text.RegularExpressions;
using IlgpuLlama.Cli;
using IlgpuLlama.Cli.Commands;
using IlgpuLlama.Cli.Infrastructure;
using IlgpuLlama.Device;
using IlgpuLlama.Engine;
using IlgpuLlama.Engine.Serving;
using IlgpuLlama.Sampling;
using IlgpuLlama.Text;

namespace IlgpuLlama.Tests.Cli;

/// <summary>chat on the demo model through the real command: Ctrl-C (an injected interrupt source) and a conversation that outgrows the KV cache.</summary>
public sealed partial class ChatSessionTests(DemoModelDir demo) : IClassFixture<DemoModelDir>
{
    /// <summary>Standard output that presses Ctrl-C <paramref name="presses"/> times when the reply to message <paramref name="turn"/> shows its first text.</summary>
    sealed class CtrlCOnReply(Interrupts interrupts, int turn, int presses) : StringWriter
    {
        int prompts;
        bool pressed;

        public override void Write(string? value)
        {
            base.Write(value);
            if (value == "> ")
                prompts++;
            else if (!pressed && prompts == turn && !string.IsNullOrEmpty(value))
            {
                pressed = true;
                for (int i = 0; i < presses; i++)
                    interrupts.Interrupt();
            }
        }
    }

    /// <summary>Standard input like a console's: the given lines, then a wait for more during which Ctrl-C is pressed.</summary>
    sealed class CtrlCWhenWaiting(Interrupts interrupts, params string[] lines) : TextReader
    {
        readonly Queue<string> queue = new(lines);

        public ManualResetEventSlim Release { get; } = new();

        public int Reads { get; private set; }

        public override string? ReadLine()
        {
            Reads++;
            if (queue.TryDequeue(out var line))
                return line;
            interrupts.Interrupt();
            Release.Wait(TimeSpan.FromMinutes(2));
            return null;
        }
    }

    string[] ChatArgs(params string[] extra) =>
        ["chat", "--model", demo.Path, "--device", "cpu", "--date", "2024-07-26", .. extra];

    [GeneratedRegex(@"\(reply stopped by Ctrl-C after (\d+) tokens")]
    private static partial Regex StoppedAfter();

    [Fact]
    public void Ctrl_c_stops_the_reply_and_returns_to_the_prompt_and_at_the_prompt_it_exits()
    {
        var interrupts = new Interrupts();
        var input = new CtrlCWhenWaiting(interrupts, "hello", "again");
        var output = new CtrlCOnReply(interrupts, turn: 1, presses: 1);
        var error = new StringWriter();
        int code = Program.Run(ChatArgs("--max-new-tokens", "12"), input, output, error, interrupts);
        input.Release.Set();
        string err = error.ToString();
        Assert.True(code == 0, err);

        // The first reply stopped at once (the token after the first printed one is not shown), the second ran to its end.
        var stopped = StoppedAfter().Match(err);
        Assert.True(stopped.Success, err);
        Assert.InRange(int.Parse(stopped.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture), 1, 2);
        var status = err.Split('\n').Where(l => l.Contains("tok/s", StringComparison.Ordinal)).ToArray();
        Assert.Single(status);
        Assert.Contains("reply cut at --max-new-tokens 12", status[0]);
        // Both messages were read, then the third read was cut short by Ctrl-C (not by end of input).
        Assert.Equal(3, input.Reads);
        Assert.EndsWith("(Ctrl-C: exiting)", err.TrimEnd());
    }

    [Fact]
    public void Ctrl_c_twice_quickly_during_a_reply_exits()
    {
        var interrupts = new Interrupts();
        var input = new CtrlCWhenWaiting(interrupts, "hello", "never read");
        var output = new CtrlCOnReply(interrupts, turn: 1, presses: 2);
        var error = new StringWriter();
        int code = Program.Run(ChatArgs("--max-new-tokens", "12"), input, output, error, interrupts);
        input.Release.Set();
        string err = error.ToString();
        Assert.True(code == 0, err);
        Assert.Matches(StoppedAfter(), err);
        Assert.EndsWith("(Ctrl-C twice: exiting)", err.TrimEnd());
        Assert.Equal(1, input.Reads);
    }

    /// <summary>Standard output that keeps what was written after each "> " prompt: the reply to each message.</summary>
    sealed class RepliesWriter : StringWriter
    {
        public List<StringBuilder> Replies { get; } = [];

        public override void Write(string? value)
        {
            base.Write(value);
            if (value == "> ")
                Replies.Add(new StringBuilder());
            else if (Replies.Count > 0)
                Replies[^1].Append(value);
        }

        public override void WriteLine(string? value)
        {
            Write(value);
            Write(Environment.NewLine);
        }
    }

    [Fact]
    public void A_second_turn_continues_the_conversation_held_in_the_cache()
    {
        // The second reply must be what the model says after the whole conversation: chat feeds only the
        // new tokens after the ones its KV slot holds (it once restarted them at position 0, so the model
        // saw the new message alone). The reference continues the same slot through the library.
        string[] messages = ["hello there", "and what next"];
        var day = new DateOnly(2024, 7, 26);
        var output = new RepliesWriter();
        var error = new StringWriter();
        // Sampled with a seed: the demo model's greedy reply is the same in any context, its distribution is not.
        int code = Program.Run(ChatArgs("--max-new-tokens", "8", "--max-seq-len", "256", "--temperature", "1.5", "--top-k", "0", "--top-p", "1", "--seed", "7"),
            new StringReader(string.Join('\n', messages) + "\n"), output, error);
        Assert.True(code == 0, error.ToString());
        Assert.True(output.Replies.Count >= 2, output.ToString());
        // A sampled chat says its seed, as --seed's help promises (issue 23).
        Assert.Contains("seed: 7", error.ToString());

        var tokenizer = ModelOptions.LoadTokenizer(demo.Path);
        using var device = ComputeDevice.Create(DeviceKind.Cpu);
        using var model = LlamaModel.Load(device, demo.Path, new EngineOptions { MaxBatchSize = 1, MaxSeqLen = 256 });
        var stops = new HashSet<int>(model.Config.EosTokenIds.Concat(tokenizer.StopIds));
        var settings = new GenerationSettings { MaxNewTokens = 8, Sampling = new SamplingOptions { Temperature = 1.5f, TopK = 0, TopP = 1f, Seed = 7 }, StopTokens = stops };
        var generator = new Generator(model);
        var history = new List<ChatMessage>();
        var cached = new List<int>();
        var expected = new List<string>();
        foreach (var message in messages)
        {
            history.Add(new ChatMessage("user", message));
            var full = ChatTemplate.Encode(tokenizer, history, addGenerationPrompt: true, day);
            int keep = 0;
            while (keep < cached.Count && keep < full.Count - 1 && cached[keep] == full[keep])
                keep++;
            var reply = generator.Generate([full.Skip(keep).ToArray()], settings, startPositions: [keep]).Sequences[0].GeneratedTokens;
            string text = tokenizer.Decode(reply.Where(t => !stops.Contains(t)), includeSpecial: false);
            expected.Add(text);
            history.Add(new ChatMessage("assistant", text));
            cached = [.. full, .. reply.Take(reply.Count - 1)]; // the last token was never fed back
        }
        // Each reply is printed, then its line ends.
        Assert.Equal(expected[0] + Environment.NewLine, output.Replies[0].ToString());
        Assert.Equal(expected[1] + Environment.NewLine, output.Replies[1].ToString());
    }

    [Fact]
    public void A_conversation_that_outgrows_the_cache_drops_its_oldest_turns_and_says_so()
    {
        const int maxSeq = 128;
        var error = new StringWriter();
        var output = new StringWriter();
        string[] messages = ["hello", "tell me about the fox", "and the dog", "what about the graphics card", "one more", "the last one"];
        int code = Program.Run(ChatArgs("--max-new-tokens", "12", "--max-seq-len", $"{maxSeq}", "--system", "You are brief."),
            new StringReader(string.Join('\n', messages) + "\n"), output, error);
        string err = error.ToString();
        Assert.True(code == 0, err);
        var lines = err.Split('\n');
        // Every message got a reply; none was refused.
        var status = lines.Where(l => l.Contains("tok/s", StringComparison.Ordinal)).ToArray();
        Assert.Equal(messages.Length, status.Length);
        Assert.DoesNotContain(lines, l => l.StartsWith("error:", StringComparison.Ordinal));
        var drops = lines.Where(l => l.StartsWith("(context full: dropped the ", StringComparison.Ordinal)).ToArray();
        Assert.NotEmpty(drops);
        Assert.All(drops, l => Assert.Contains($"to fit --max-seq-len {maxSeq}, kept the system prompt;", l));
        // A reply that filled the cache, or hit --max-new-tokens, says it was cut.
        foreach (var s in status)
        {
            var used = Regex.Match(s, @"(\d+)/(\d+) positions used");
            Assert.True(used.Success, s);
            if (int.Parse(used.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) >= maxSeq - 1)
                Assert.Contains("reply cut", s);
        }
        Assert.Contains(status, s => s.Contains("reply cut at --max-new-tokens 12", StringComparison.Ordinal));
    }

    [Fact]
    public void Fitting_the_context_drops_whole_turns_oldest_first_and_keeps_the_system_prompt()
    {
        // One token per character of content: lengths are easy to follow.
        static List<int> Encode(IReadOnlyList<ChatMessage> m) => [.. Enumerable.Repeat(0, m.Sum(x => x.Content.Length))];
        List<ChatMessage> Conversation() =>
        [
            new("system", new string('s', 10)),
            new("user", new string('u', 20)), new("assistant", new string('a', 20)),
            new("user", new string('v', 20)), new("assistant", new string('b', 20)),
            new("user", new string('w', 20)),
        ];

        var all = Conversation();
        var (tokens, dropped) = ChatCommand.FitContext(all, 1, Encode, maxSeq: 200, room: 50);
        Assert.Equal((110, 0), (tokens!.Count, dropped));
        Assert.Equal(6, all.Count);

        var one = Conversation();
        (tokens, dropped) = ChatCommand.FitContext(one, 1, Encode, maxSeq: 120, room: 40);
        Assert.Equal((70, 1), (tokens!.Count, dropped));
        Assert.Equal(["system", "user", "assistant", "user"], one.Select(m => m.Role));
        Assert.Equal('v', one[1].Content[0]);

        // Room for the reply cannot be made, but the new message still fits: everything old goes, the reply gets what is left.
        var tight = Conversation();
        (tokens, dropped) = ChatCommand.FitContext(tight, 1, Encode, maxSeq: 40, room: 20);
        Assert.Equal((30, 2), (tokens!.Count, dropped));
        Assert.Equal(["system", "user"], tight.Select(m => m.Role));

        // Not even the system prompt and the new message fit: nothing changes.
        var none = Conversation();
        (tokens, dropped) = ChatCommand.FitContext(none, 1, Encode, maxSeq: 30, room: 5);
        Assert.Null(tokens);
        Assert.Equal(6, none.Count);
    }
}
