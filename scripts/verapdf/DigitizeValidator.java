// A long-lived veraPDF validator. Answers one line per PDF path ("PASS",
// "FAIL\t<clause-test: message (n checks)>\t...", or "ERROR\t<message>"), in one of two modes:
//   DigitizeValidator [flavour]                                     paths on stdin, answers on stdout
//   DigitizeValidator --serve SOCKET [--idle-seconds N] [flavour]   the same per unix-socket connection
// The server answers only peers of its own user (SO_PEERCRED); its socket folder is checked and
// handed over by the client that launches it (SOCKET is /proc/self/fd/N/<name>, see resident.py).
// JVM start-up, not validation, is most of veraPDF's cost on a one-page scan: the stdin mode pays it
// once per batch, the server once per machine and user (`digitize run` connects to it; see verapdf.py).
// Built by scripts/setup.sh against the veraPDF jars from Maven Central (GPLv3/MPL).

import java.io.BufferedInputStream;
import java.io.BufferedReader;
import java.io.ByteArrayOutputStream;
import java.io.ByteArrayInputStream;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.io.PrintStream;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.Channels;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.UserPrincipal;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.FutureTask;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.SynchronousQueue;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;

import jdk.net.ExtendedSocketOptions;
import jdk.net.UnixDomainPrincipal;

import org.verapdf.gf.foundry.VeraGreenfieldFoundryProvider;
import org.verapdf.pdfa.Foundries;
import org.verapdf.pdfa.PDFAParser;
import org.verapdf.pdfa.PDFAValidator;
import org.verapdf.pdfa.flavours.PDFAFlavour;
import org.verapdf.pdfa.results.TestAssertion;
import org.verapdf.pdfa.results.ValidationResult;
import org.verapdf.pdfa.validation.profiles.Profiles;
import org.verapdf.pdfa.validation.profiles.ValidationProfile;

public final class DigitizeValidator {
    private DigitizeValidator() {
    }

    /** Exit code of a server that found another one already owning its socket path. */
    static final int ALREADY_SERVED = 3;
    /** A request line is a path (PATH_MAX 4096 bytes) or a word: a longer one ends its connection. */
    static final int MAX_LINE = 4096 + 16;
    /** Clients served at once (one per digitize process); more are closed at once, not given a thread. */
    static final int MAX_CONNECTIONS = 256;
    /** How long a client past the cap is given to send its first line before it is told BUSY. */
    static final long BUSY_WAIT_NANOS = 1_000_000_000L;

    /** One line without its end (\n or \r\n), null at the end of input; past MAX_LINE bytes an
     *  IOException, never a buffer as big as what a client sends. */
    static String readLine(InputStream in) throws IOException {
        ByteArrayOutputStream line = new ByteArrayOutputStream();
        int b;
        while ((b = in.read()) != -1) {
            if (b == '\n') {
                byte[] bytes = line.toByteArray();
                int end = bytes.length > 0 && bytes[bytes.length - 1] == '\r' ? bytes.length - 1 : bytes.length;
                return new String(bytes, 0, end, StandardCharsets.UTF_8);
            }
            if (line.size() >= MAX_LINE) {
                throw new IOException("request line longer than " + MAX_LINE + " bytes");
            }
            line.write(b);
        }
        return line.size() > 0 ? line.toString(StandardCharsets.UTF_8) : null;
    }

    public static void main(String[] args) throws Exception {
        if (args.length > 1 && args[0].equals("--serve")) {
            double idleSeconds = 600;
            String flavour = "2b";
            for (int i = 2; i < args.length; i++) {
                if (args[i].equals("--idle-seconds") && i + 1 < args.length) {
                    idleSeconds = Double.parseDouble(args[++i]);
                } else {
                    flavour = args[i];
                }
            }
            System.exit(new Server(Path.of(args[1]), idleSeconds, flavour).run());
        }
        PDFAFlavour flavour = initialise(args.length > 0 ? args[0] : "2b");
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        PrintStream out = new PrintStream(System.out, true, "UTF-8");
        out.println("READY");
        String path;
        while ((path = in.readLine()) != null) {
            if (path.isEmpty()) {
                continue;
            }
            out.println(validate(path, flavour));
        }
    }

    private static PDFAFlavour initialise(String name) {
        PDFAFlavour flavour = flavourOf(name);
        warmUp(flavour);
        return flavour;
    }

    private static PDFAFlavour flavourOf(String name) {
        VeraGreenfieldFoundryProvider.initialise();
        PDFAFlavour flavour = PDFAFlavour.fromString(name);
        profileOf(flavour);
        return flavour;
    }

    private static final Map<PDFAFlavour, ValidationProfile> PROFILES = new ConcurrentHashMap<>();

    /** The flavour's validation profile, read alone from its XML in veraPDF's jar. veraPDF's own
     *  lookup (Profiles.getVeraProfileDirectory, behind createValidator(flavour)) unmarshals all of its
     *  ~16 built-in profiles first, 3 MB of XML with WCAG's and PDF/UA-2's, ~0.6-0.8 CPU-s at every JVM
     *  start of a one-page check; the same profile is taken from there only when its file is not found
     *  or is not of this flavour. */
    static ValidationProfile profileOf(PDFAFlavour flavour) {
        return PROFILES.computeIfAbsent(flavour, DigitizeValidator::readProfile);
    }

    private static ValidationProfile readProfile(PDFAFlavour flavour) {
        String resource = "/org/verapdf/pdfa/validation/PDFA-" + flavour.getId().toUpperCase(Locale.ROOT) + ".xml";
        try (InputStream in = ValidationProfile.class.getResourceAsStream(resource)) {
            if (in != null) {
                ValidationProfile profile = Profiles.profileFromXml(in);
                if (profile.getPDFAFlavour() == flavour) {
                    return profile;
                }
            }
        } catch (Exception e) {
            // veraPDF's directory below says what is wrong, if anything is
        }
        return Profiles.getVeraProfileDirectory().getValidationProfileByFlavour(flavour);
    }

    /** Validate a tiny PDF before saying READY: loads the profile and classes while the caller works. */
    private static void warmUp(PDFAFlavour flavour) {
        String[] objects = {
            "<</Type/Catalog/Pages 2 0 R>>",
            "<</Type/Pages/Kids[3 0 R]/Count 1>>",
            "<</Type/Page/Parent 2 0 R/MediaBox[0 0 10 10]/Resources<<>>>>",
        };
        StringBuilder pdf = new StringBuilder("%PDF-1.7\n");
        StringBuilder xref = new StringBuilder("xref\n0 4\n0000000000 65535 f \n");
        for (int i = 0; i < objects.length; i++) {
            xref.append(String.format("%010d 00000 n \n", pdf.length()));
            pdf.append(i + 1).append(" 0 obj").append(objects[i]).append("endobj\n");
        }
        int start = pdf.length();
        pdf.append(xref).append("trailer<</Size 4/Root 1 0 R>>\nstartxref\n").append(start).append("\n%%EOF\n");
        check(new ByteArrayInputStream(pdf.toString().getBytes(StandardCharsets.US_ASCII)), flavour);
    }

    private static String validate(String path, PDFAFlavour flavour) {
        try (InputStream stream = new FileInputStream(path)) {
            return check(stream, flavour);
        } catch (Exception e) {
            return "ERROR\t" + oneLine(e.getClass().getSimpleName() + ": " + e.getMessage());
        }
    }

    private static String check(InputStream stream, PDFAFlavour flavour) {
        try (PDFAParser parser = Foundries.defaultInstance().createParser(stream, flavour);
             PDFAValidator validator = Foundries.defaultInstance().createValidator(profileOf(flavour), false)) {
            ValidationResult result = validator.validate(parser);
            if (result.isCompliant()) {
                return "PASS";
            }
            Map<String, Integer> counts = new LinkedHashMap<>();
            Map<String, String> messages = new LinkedHashMap<>();
            for (TestAssertion assertion : result.getTestAssertions()) {
                if (assertion.getStatus() != TestAssertion.Status.FAILED) {
                    continue;
                }
                String rule = assertion.getRuleId().getClause() + "-" + assertion.getRuleId().getTestNumber();
                counts.merge(rule, 1, Integer::sum);
                messages.putIfAbsent(rule, oneLine(assertion.getMessage()));
            }
            StringBuilder line = new StringBuilder("FAIL");
            for (Map.Entry<String, Integer> entry : counts.entrySet()) {
                line.append('\t').append(entry.getKey()).append(": ").append(messages.get(entry.getKey()))
                    .append(" (").append(entry.getValue()).append(" checks)");
            }
            return line.toString();
        } catch (Exception | StackOverflowError e) {
            return "ERROR\t" + oneLine(e.getClass().getSimpleName() + ": " + e.getMessage());
        }
    }

    private static String oneLine(String text) {
        return text == null ? "" : text.replaceAll("\\s+", " ").trim();
    }

    /**
     * The stdin protocol served on a unix socket, one thread per connection, until idle or told QUIT.
     * A lock file beside the socket, held for the server's life, makes "one server per socket path"
     * atomic: a second server exits at once, and a socket file found under the lock is stale. The lock
     * file holds the server's pid, for `digitize validator status` while it is still starting.
     */
    private static final class Server {
        private final Path socket;
        private final long idleNanos;
        private final String flavourName;
        private final long started = System.nanoTime();
        private final long pid = ProcessHandle.current().pid();
        private final UserPrincipal me;
        // At most one validation per core, each on one of these long-lived threads: veraPDF keeps its
        // Rhino context and compiled rule scripts per thread (JavaScriptEvaluator's ThreadLocals), so a
        // validation on a fresh thread per connection compiled them all again (~0.1 CPU-s a file).
        // One thread to begin with; another only when a check comes while all are busy (the hand-over
        // queue holds no task, so a busy pool grows), up to one per core, and past that a check waits
        // for a thread: each new one compiles the scripts (~0.3 CPU-s), which files checked one at a
        // time never need, and a 16-core machine paid 16 times at every start.
        private final int threads = Math.max(1, Runtime.getRuntime().availableProcessors());
        // Fault injection for the tests: each validator thread pauses this long after answering, before it
        // takes the next check, as on a loaded machine (unset, or not a number: no pause).
        private static final long LINGER_MILLIS = lingerMillis(System.getenv("DIGITIZE_FAULT_VALIDATOR_LINGER_MS"));

        private static long lingerMillis(String value) {
            try {
                return value == null ? 0 : Math.max(0, Math.min(10_000, Long.parseLong(value.trim())));
            } catch (NumberFormatException e) {
                return 0;
            }
        }

        private final ThreadPoolExecutor validators = new ThreadPoolExecutor(1, threads, 365, TimeUnit.DAYS,
            new SynchronousQueue<>(), task -> {
                Thread thread = new Thread(task, "validator");
                thread.setDaemon(true);
                return thread;
            }, (task, pool) -> {
                try {
                    pool.getQueue().put(task);  // every thread busy: this client's thread waits for one
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new RejectedExecutionException(e);
                }
            }) {
            @Override
            protected void afterExecute(Runnable task, Throwable thrown) {
                if (LINGER_MILLIS > 0) {  // tests only: a thread slow to get back to the queue
                    try {
                        Thread.sleep(LINGER_MILLIS);
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                }
            }
        };
        private final Object state = new Object();
        private PDFAFlavour flavour;
        private volatile Selector selector;
        private volatile boolean stopping;
        private int connections;
        private int working;
        private long validated;
        private long lastActive = System.nanoTime();

        Server(Path socket, double idleSeconds, String flavourName) throws IOException {
            this.me = Files.getOwner(Path.of("/proc/self"));  // its owner is this process's user
            this.socket = socket.toAbsolutePath();
            this.idleNanos = (long) (idleSeconds * 1e9);
            this.flavourName = flavourName;
        }

        int run() throws Exception {
            Path lockPath = socket.resolveSibling(socket.getFileName() + ".lock");
            try (FileChannel lockFile = FileChannel.open(lockPath, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                                                         LinkOption.NOFOLLOW_LINKS)) {
                if (!me.equals(Files.getOwner(lockPath, LinkOption.NOFOLLOW_LINKS))) {
                    System.out.println("the lock file " + lockPath + " is not this user's");
                    return ALREADY_SERVED;
                }
                FileLock lock = lock(lockFile);
                if (lock == null) {
                    System.out.println("another validator serves " + socket);
                    return ALREADY_SERVED;
                }
                lockFile.truncate(0).write(ByteBuffer.wrap(Long.toString(pid).getBytes(StandardCharsets.US_ASCII)));
                flavour = flavourOf(flavourName);
                warmUpThreads();
                try (ServerSocketChannel listener = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
                    Files.deleteIfExists(socket);
                    // only now: clients wait for a warm server; a backlog as deep as the cap, so a burst of
                    // clients queues while this thread starts theirs instead of meeting EAGAIN
                    listener.bind(UnixDomainSocketAddress.of(socket), MAX_CONNECTIONS);
                    if (LINGER_MILLIS > 0) {  // a test's setting left in a shell would slow every check: say so
                        System.out.println("fault injection: each validator thread pauses " + LINGER_MILLIS
                            + " ms after a check (DIGITIZE_FAULT_VALIDATOR_LINGER_MS)");
                    }
                    System.out.println("READY " + socket + " pid " + pid);
                    acceptUntilIdle(listener);
                } finally {
                    Files.deleteIfExists(socket);
                    lock.release();  // before finishing work in progress: a new server may start at once
                }
            }
            awaitWork();
            System.out.println("stopped after " + validated + " validations");
            return 0;
        }

        /** The first validator thread checks the tiny PDF before READY (classes loaded, scripts compiled). */
        private void warmUpThreads() throws InterruptedException, ExecutionException {
            validators.submit(() -> warmUp(flavour)).get();
        }

        /** A client probing whether a server is starting holds the lock for microseconds: retry briefly. */
        private static FileLock lock(FileChannel file) throws IOException, InterruptedException {
            for (int attempt = 0; attempt < 10; attempt++) {
                FileLock lock = file.tryLock();
                if (lock != null) {
                    return lock;
                }
                Thread.sleep(20);
            }
            return null;
        }

        /** Accepting and the idle decision share one thread, so no connection slips in between. */
        private void acceptUntilIdle(ServerSocketChannel listener) throws IOException {
            listener.configureBlocking(false);
            try (Selector sel = Selector.open()) {
                selector = sel;
                listener.register(sel, SelectionKey.OP_ACCEPT);
                ByteBuffer scratch = ByteBuffer.allocate(MAX_LINE);
                try {
                    acceptLoop(listener, sel, scratch);
                } finally {
                    for (SelectionKey key : sel.keys()) {
                        if (key.attachment() instanceof TurnedAway) {
                            busy(key);
                        }
                    }
                }
            }
        }

        /** A client past the cap, read (and its bytes dropped) until its first line, then told BUSY. */
        private static final class TurnedAway {
            final long deadline = System.nanoTime() + BUSY_WAIT_NANOS;
            int read;
        }

        private void acceptLoop(ServerSocketChannel listener, Selector sel, ByteBuffer scratch) throws IOException {
            while (!stopping) {
                boolean waiting = sel.keys().size() > 1;  // clients past the cap, each within its deadline
                sel.select(waiting ? 100 : 1000);
                for (SelectionKey key : sel.selectedKeys()) {
                    if (key.attachment() instanceof TurnedAway away) {
                        drain(key, away, scratch);
                    }
                }
                sel.selectedKeys().clear();
                long now = System.nanoTime();
                for (SelectionKey key : sel.keys()) {
                    if (key.attachment() instanceof TurnedAway away && now - away.deadline > 0) {
                        busy(key);  // it sent no line in time: told now, and its next write fails
                    }
                }
                SocketChannel client;
                while ((client = listener.accept()) != null) {
                    if (!sameUser(client)) {
                        client.close();  // another user's process: not even whether a path exists
                        continue;
                    }
                    boolean full;
                    synchronized (state) {
                        full = connections >= MAX_CONNECTIONS;
                        if (!full) {
                            connections++;
                        }
                    }
                    if (full) {  // no thread per connection without end: BUSY, and the client validates itself
                        turnAway(sel, client);
                        continue;
                    }
                    SocketChannel channel = client;
                    Thread thread = new Thread(() -> serve(channel), "client");
                    thread.setDaemon(true);
                    thread.start();
                }
                synchronized (state) {
                    if (connections == 0 && System.nanoTime() - lastActive > idleNanos) {
                        return;
                    }
                }
            }
        }

        /** BUSY only once the client's first line is in (or its deadline passed): a client whose write
         *  met a closed socket could miss it, and closing on unread data resets the connection. Waited
         *  on by this thread's selector, so clients past the cap still get no thread. */
        private static void turnAway(Selector sel, SocketChannel client) {
            if (sel.keys().size() > MAX_CONNECTIONS) {  // as many waiting already: told at once
                sayBusy(client);
                return;
            }
            try {
                client.configureBlocking(false);
                client.register(sel, SelectionKey.OP_READ, new TurnedAway());
            } catch (IOException e) {
                sayBusy(client);
            }
        }

        /** What a client past the cap sent is read and dropped; BUSY at its line's end, MAX_LINE or EOF. */
        private static void drain(SelectionKey key, TurnedAway away, ByteBuffer scratch) {
            SocketChannel client = (SocketChannel) key.channel();
            try {
                scratch.clear();
                int n = client.read(scratch);
                boolean lineEnd = false;
                for (int i = 0; i < Math.max(n, 0) && !lineEnd; i++) {
                    lineEnd = scratch.get(i) == '\n';
                }
                away.read += Math.max(n, 0);
                if (n < 0 || lineEnd || away.read >= MAX_LINE) {
                    busy(key);
                }
            } catch (IOException e) {
                busy(key);
            }
        }

        private static void busy(SelectionKey key) {
            key.cancel();
            sayBusy((SocketChannel) key.channel());
        }

        private static void sayBusy(SocketChannel client) {
            try (client) {
                client.write(ByteBuffer.wrap("BUSY\n".getBytes(StandardCharsets.US_ASCII)));
            } catch (IOException e) {
                // gone already
            }
        }

        /** Whether the peer runs as our user: the kernel's word for it (SO_PEERCRED). */
        private boolean sameUser(SocketChannel client) {
            try {
                UnixDomainPrincipal peer = client.getOption(ExtendedSocketOptions.SO_PEERCRED);
                return peer != null && me.equals(peer.user());
            } catch (IOException | UnsupportedOperationException e) {
                return false;
            }
        }

        private void serve(SocketChannel channel) {
            try (channel) {
                InputStream in = new BufferedInputStream(Channels.newInputStream(channel));
                OutputStream out = Channels.newOutputStream(channel);
                String line;
                while (!stopping && (line = readLine(in)) != null) {
                    if (!line.isEmpty()) {
                        out.write((answer(line) + "\n").getBytes(StandardCharsets.UTF_8));
                    }
                    if (line.equals("QUIT")) {  // answered first: the process may end any moment after
                        stopping = true;
                        selector.wakeup();
                    }
                }
            } catch (IOException e) {
                // the client went away (it timed out or was interrupted), or sent a line no path has: nobody to answer
            } finally {
                synchronized (state) {
                    connections--;
                    lastActive = System.nanoTime();
                }
            }
        }

        private String answer(String line) {
            if (line.equals("STATUS") || line.equals("QUIT")) {
                return status();
            }
            FutureTask<String> check = new FutureTask<>(() -> validate(line, flavour));
            boolean spare;
            synchronized (state) {
                spare = working < validators.getPoolSize();  // a thread not on anyone's check
                working++;
            }
            try {
                if (spare) {
                    // handed to that thread, waiting while it gets back to the queue: it has given the last
                    // answer but may not be there yet (a loaded machine), and submit() would then start
                    // another thread, compiling the rule scripts again, for checks that never overlapped
                    validators.getQueue().put(check);  // the pool is never shut down: a thread takes it
                } else {
                    validators.execute(check);  // every thread on a check: another one, up to one per core
                }
                return check.get();
            } catch (InterruptedException | ExecutionException | RejectedExecutionException e) {
                return "ERROR\t" + oneLine(e.getClass().getSimpleName() + ": " + e.getMessage());
            } finally {
                synchronized (state) {
                    working--;
                    validated++;
                    lastActive = System.nanoTime();
                }
            }
        }

        private String status() {
            synchronized (state) {
                long now = System.nanoTime();
                return String.format(Locale.ROOT,
                    "OK\tpid=%d\tuptime=%.1f\tidle=%.1f\tvalidated=%d\tclients=%d\tthreads=%d",
                    pid, (now - started) / 1e9, working > 0 ? 0.0 : (now - lastActive) / 1e9, validated,
                    connections - 1, validators.getPoolSize());
            }
        }

        /** Answers owed to connected clients are still given after the socket is gone. */
        private void awaitWork() throws InterruptedException {
            long deadline = System.nanoTime() + 120_000_000_000L;
            while (System.nanoTime() < deadline) {
                synchronized (state) {
                    if (working == 0) {
                        return;
                    }
                }
                Thread.sleep(50);
            }
        }
    }
}
