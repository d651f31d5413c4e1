import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.util.ArrayList;
import java.util.Enumeration;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.ListIterator;
import java.util.Map;
import java.util.Set;
import java.util.zip.ZipEntry;
import java.util.zip.ZipFile;
import java.util.zip.ZipOutputStream;

import org.objectweb.asm.ClassReader;
import org.objectweb.asm.ClassWriter;
import org.objectweb.asm.ConstantDynamic;
import org.objectweb.asm.Handle;
import org.objectweb.asm.Opcodes;
import org.objectweb.asm.Type;
import org.objectweb.asm.tree.AbstractInsnNode;
import org.objectweb.asm.tree.ClassNode;
import org.objectweb.asm.tree.FieldInsnNode;
import org.objectweb.asm.tree.FieldNode;
import org.objectweb.asm.tree.InvokeDynamicInsnNode;
import org.objectweb.asm.tree.LdcInsnNode;
import org.objectweb.asm.tree.MethodInsnNode;
import org.objectweb.asm.tree.MethodNode;

/**
 * Rewrites onnxruntime's Java classes (class version 61, Java 17) as class version 52 (Java 8), so
 * that Debian's dx can dex them. It knows exactly three Java 9+ constructs and refuses anything else
 * (one "edgepack: error:" line, exit 1), so a future AAR that needs more fails loudly:
 *
 * <ol>
 *   <li>nests (NestHost/NestMembers): the attributes go, and every private member that another class
 *       of the jar uses becomes package-private (a nest shares a package); instance calls to a
 *       de-privatized method become invokevirtual (dx turns invokespecial on a non-private method into
 *       invoke-super, or invoke-direct on the class's own, which ART refuses), calls to a method that
 *       stays private become invokespecial, as a Java 8 class file has them (Java 11+ javac writes
 *       invokevirtual; dx would make invoke-direct of those too);</li>
 *   <li>non-capturing lambdas (invokedynamic with LambdaMetafactory.metafactory and a static body):
 *       each becomes a small final class with one instance, read with getstatic where the
 *       invokedynamic was;</li>
 *   <li>the class version itself: 52, with stack map frames recomputed by ASM against the jar and
 *       android.jar.</li>
 * </ol>
 *
 * Usage: java Downgrade IN.jar OUT.jar ANDROID.jar (with LambdaClass.java beside it). Only .class entries are written; OUT.jar appears
 * only when every class was rewritten.
 */
public final class Downgrade {
    static final int MAX_VERSION = 61;
    static final String METAFACTORY = "java/lang/invoke/LambdaMetafactory.metafactory";

    static final class Refusal extends Exception {
        Refusal(String message) {
            super(message);
        }
    }

    private final Map<String, ClassNode> classes = new LinkedHashMap<String, ClassNode>();
    private final Map<String, ClassNode> library = new HashMap<String, ClassNode>();
    private final ZipFile androidJar;
    int lambdas, deprivatized, toVirtual, toSpecial;

    Downgrade(ZipFile androidJar) {
        this.androidJar = androidJar;
    }

    public static void main(String[] args) {
        if (args.length != 3) {
            System.err.println("edgepack: error: usage: java Downgrade IN.jar OUT.jar ANDROID.jar");
            System.exit(2);
        }
        try (ZipFile in = new ZipFile(args[0]); ZipFile android = new ZipFile(args[2])) {
            Downgrade d = new Downgrade(android);
            Map<String, byte[]> out = d.run(in);
            write(out, new File(args[1]));
            System.err.println("downgraded " + args[0] + ": " + d.classes.size() + " classes to version 52 ("
                    + d.lambdas + " lambdas as classes, " + d.deprivatized + " private members made package-private, "
                    + d.toVirtual + " calls invokespecial->invokevirtual, " + d.toSpecial
                    + " private calls ->invokespecial)");
        } catch (Refusal r) {
            System.err.println("edgepack: error: " + r.getMessage());
            System.exit(1);
        } catch (IOException | RuntimeException e) {
            System.err.println("edgepack: error: downgrading " + args[0] + ": " + e);
            System.exit(1);
        }
    }

    Map<String, byte[]> run(ZipFile in) throws IOException, Refusal {
        Enumeration<? extends ZipEntry> entries = in.entries();
        while (entries.hasMoreElements()) {
            ZipEntry e = entries.nextElement();
            if (e.isDirectory() || !e.getName().endsWith(".class")) {
                continue;
            }
            byte[] bytes = readAll(in.getInputStream(e));
            int major = ((bytes[6] & 0xff) << 8) | (bytes[7] & 0xff);
            if (major > MAX_VERSION) {
                throw new Refusal(e.getName() + " has class version " + major + " (Java " + (major - 44)
                        + "); the downgrader knows class versions up to " + MAX_VERSION);
            }
            ClassNode c = new ClassNode();
            new ClassReader(bytes).accept(c, ClassReader.SKIP_FRAMES);
            check(c);
            classes.put(c.name, c);
        }
        if (classes.isEmpty()) {
            throw new Refusal(in.getName() + " holds no classes");
        }
        for (ClassNode c : new ArrayList<ClassNode>(classes.values())) {
            for (MethodNode m : c.methods) {
                rewriteLambdas(c, m);
            }
        }
        fixNests();
        Map<String, byte[]> out = new LinkedHashMap<String, byte[]>();
        for (ClassNode c : classes.values()) {
            c.version = Opcodes.V1_8;
            c.nestHostClass = null;
            c.nestMembers = null;
            ClassWriter w = new FrameWriter();
            c.accept(w);
            out.put(c.name + ".class", w.toByteArray());
        }
        return out;
    }

    /** Refuses what this tool cannot rewrite. */
    void check(ClassNode c) throws Refusal {
        String where = c.name.replace('/', '.');
        if (c.module != null || c.name.endsWith("module-info")) {
            throw new Refusal(where + " is a module descriptor, which the downgrader does not rewrite");
        }
        if (c.recordComponents != null || "java/lang/Record".equals(c.superName)) {
            throw new Refusal(where + " is a record, which the downgrader does not rewrite");
        }
        if (c.permittedSubclasses != null) {
            throw new Refusal(where + " is sealed (PermittedSubclasses), which the downgrader does not rewrite");
        }
        if (c.attrs != null && !c.attrs.isEmpty()) {
            throw new Refusal(where + " has an attribute the downgrader does not know: " + c.attrs.get(0).type);
        }
        boolean itf = (c.access & Opcodes.ACC_INTERFACE) != 0;
        for (MethodNode m : c.methods) {
            String at = where + "." + m.name + m.desc;
            if (itf && (m.access & Opcodes.ACC_PRIVATE) != 0 && (m.access & Opcodes.ACC_STATIC) == 0) {
                throw new Refusal(at + " is a private interface instance method (Java 9), which the downgrader does not rewrite");
            }
            for (AbstractInsnNode i : m.instructions) {
                if (i instanceof InvokeDynamicInsnNode) {
                    InvokeDynamicInsnNode indy = (InvokeDynamicInsnNode) i;
                    String bsm = indy.bsm.getOwner() + "." + indy.bsm.getName();
                    if (!bsm.equals(METAFACTORY)) {
                        throw new Refusal(at + " uses invokedynamic with bootstrap " + bsm
                                + ", which the downgrader does not rewrite");
                    }
                    if (Type.getArgumentTypes(indy.desc).length != 0) {
                        throw new Refusal(at + " has a capturing lambda, which the downgrader does not rewrite");
                    }
                    Handle impl = (Handle) indy.bsmArgs[1];
                    if (impl.getTag() != Opcodes.H_INVOKESTATIC) {
                        throw new Refusal(at + " has a lambda or method reference whose body is not a static method");
                    }
                } else if (i instanceof LdcInsnNode) {
                    Object v = ((LdcInsnNode) i).cst;
                    if (v instanceof ConstantDynamic || v instanceof Handle
                            || (v instanceof Type && ((Type) v).getSort() == Type.METHOD)) {
                        throw new Refusal(at + " loads a dynamic, method handle or method type constant,"
                                + " which the downgrader does not rewrite");
                    }
                }
            }
        }
    }

    /** Each non-capturing lambda becomes a final class with one instance. */
    void rewriteLambdas(ClassNode owner, MethodNode m) throws Refusal {
        for (ListIterator<AbstractInsnNode> it = m.instructions.iterator(); it.hasNext();) {
            AbstractInsnNode i = it.next();
            if (!(i instanceof InvokeDynamicInsnNode)) {
                continue;
            }
            InvokeDynamicInsnNode indy = (InvokeDynamicInsnNode) i;
            String iface = Type.getReturnType(indy.desc).getInternalName();
            String name;
            int n = 0;
            do {
                name = owner.name + "$Lambda$" + n++;
            } while (classes.containsKey(name));
            String at = owner.name.replace('/', '.') + "." + m.name + m.desc;
            ClassNode g = LambdaClass.make(name, owner.sourceFile, indy, at);
            classes.put(name, g);
            it.set(new FieldInsnNode(Opcodes.GETSTATIC, name, LambdaClass.FIELD, "L" + iface + ";"));
            lambdas++;
        }
    }

    /** Nest-mate access without nests: de-privatize what other classes use, fix the call opcodes. */
    void fixNests() throws Refusal {
        Set<String> open = new HashSet<String>();
        for (ClassNode c : classes.values()) {
            for (MethodNode m : c.methods) {
                for (AbstractInsnNode i : m.instructions) {
                    String owner = null, key = null;
                    if (i instanceof MethodInsnNode) {
                        MethodInsnNode mi = (MethodInsnNode) i;
                        owner = mi.owner;
                        MethodNode t = method(classes.get(owner), mi.name, mi.desc);
                        if (t != null && (t.access & Opcodes.ACC_PRIVATE) != 0) {
                            key = owner + "." + mi.name + mi.desc;
                        }
                    } else if (i instanceof FieldInsnNode) {
                        FieldInsnNode fi = (FieldInsnNode) i;
                        owner = fi.owner;
                        FieldNode t = field(classes.get(owner), fi.name, fi.desc);
                        if (t != null && (t.access & Opcodes.ACC_PRIVATE) != 0) {
                            key = owner + "." + fi.name + ":" + fi.desc;
                        }
                    }
                    if (key != null && !owner.equals(c.name)) {
                        open.add(key);
                    }
                }
            }
        }
        for (ClassNode c : classes.values()) {
            boolean itf = (c.access & Opcodes.ACC_INTERFACE) != 0;
            for (MethodNode m : c.methods) {
                if (!open.contains(c.name + "." + m.name + m.desc)) {
                    continue;
                }
                boolean instance = (m.access & Opcodes.ACC_STATIC) == 0 && !m.name.equals("<init>");
                if (instance) {
                    checkNoOverride(c, m);
                }
                m.access &= ~Opcodes.ACC_PRIVATE;
                if (itf) {
                    m.access |= Opcodes.ACC_PUBLIC; // an interface method is public or private
                }
                deprivatized++;
            }
            for (FieldNode f : c.fields) {
                if (open.contains(c.name + "." + f.name + ":" + f.desc)) {
                    f.access &= ~Opcodes.ACC_PRIVATE;
                    deprivatized++;
                }
            }
        }
        for (ClassNode c : classes.values()) {
            for (MethodNode m : c.methods) {
                for (AbstractInsnNode i : m.instructions) {
                    if (!(i instanceof MethodInsnNode)) {
                        continue;
                    }
                    MethodInsnNode mi = (MethodInsnNode) i;
                    MethodNode t = method(classes.get(mi.owner), mi.name, mi.desc);
                    if (t == null || (t.access & Opcodes.ACC_STATIC) != 0 || mi.name.equals("<init>")) {
                        continue;
                    }
                    if ((t.access & Opcodes.ACC_PRIVATE) != 0) {
                        if (mi.getOpcode() != Opcodes.INVOKESPECIAL) {
                            mi.setOpcode(Opcodes.INVOKESPECIAL);
                            toSpecial++;
                        }
                    } else if (open.contains(mi.owner + "." + mi.name + mi.desc)
                            && mi.getOpcode() == Opcodes.INVOKESPECIAL) {
                        mi.setOpcode(mi.itf ? Opcodes.INVOKEINTERFACE : Opcodes.INVOKEVIRTUAL);
                        toVirtual++;
                    }
                }
            }
        }
    }

    /** A de-privatized instance method must neither override nor be overridden. */
    void checkNoOverride(ClassNode c, MethodNode m) throws Refusal {
        String what = c.name.replace('/', '.') + "." + m.name + m.desc;
        for (String s = c.superName; s != null;) {
            ClassNode sc = lookup(s);
            MethodNode t = method(sc, m.name, m.desc);
            if (t != null && (t.access & (Opcodes.ACC_PRIVATE | Opcodes.ACC_STATIC)) == 0) {
                throw new Refusal(what + " is private and used by a nest mate, but making it package-private"
                        + " would override " + s.replace('/', '.'));
            }
            s = sc.superName;
        }
        for (ClassNode other : classes.values()) {
            if (other != c && isSubclass(other, c.name) && method(other, m.name, m.desc) != null) {
                throw new Refusal(what + " is private and used by a nest mate, but making it package-private"
                        + " would let " + other.name.replace('/', '.') + " override it");
            }
        }
    }

    boolean isSubclass(ClassNode c, String ancestor) throws Refusal {
        for (String s = c.superName; s != null; s = lookup(s).superName) {
            if (s.equals(ancestor)) {
                return true;
            }
        }
        return false;
    }

    static MethodNode method(ClassNode c, String name, String desc) {
        if (c != null) {
            for (MethodNode m : c.methods) {
                if (m.name.equals(name) && m.desc.equals(desc)) {
                    return m;
                }
            }
        }
        return null;
    }

    static FieldNode field(ClassNode c, String name, String desc) {
        if (c != null) {
            for (FieldNode f : c.fields) {
                if (f.name.equals(name) && f.desc.equals(desc)) {
                    return f;
                }
            }
        }
        return null;
    }

    /** A class of the jar (as rewritten so far) or of android.jar. */
    ClassNode lookup(String name) throws Refusal {
        ClassNode c = classes.get(name);
        if (c != null) {
            return c;
        }
        c = library.get(name);
        if (c != null) {
            return c;
        }
        ZipEntry e = androidJar.getEntry(name + ".class");
        if (e == null) {
            throw new Refusal("class " + name.replace('/', '.') + " is in neither the jar nor android.jar");
        }
        c = new ClassNode();
        try {
            new ClassReader(readAll(androidJar.getInputStream(e))).accept(c,
                    ClassReader.SKIP_CODE | ClassReader.SKIP_DEBUG | ClassReader.SKIP_FRAMES);
        } catch (IOException x) {
            throw new Refusal("reading " + name + " from android.jar: " + x);
        }
        library.put(name, c);
        return c;
    }

    /** ASM's frame computation, with the class hierarchy of the jar and android.jar. */
    final class FrameWriter extends ClassWriter {
        FrameWriter() {
            super(ClassWriter.COMPUTE_FRAMES);
        }

        @Override
        protected String getCommonSuperClass(String a, String b) {
            try {
                if (isAssignable(a, b)) {
                    return a;
                }
                if (isAssignable(b, a)) {
                    return b;
                }
                if ((lookup(a).access & Opcodes.ACC_INTERFACE) != 0 || (lookup(b).access & Opcodes.ACC_INTERFACE) != 0) {
                    return "java/lang/Object";
                }
                for (String s = a; s != null; s = lookup(s).superName) {
                    if (isAssignable(s, b)) {
                        return s;
                    }
                }
                return "java/lang/Object";
            } catch (Refusal r) {
                throw new IllegalStateException("cannot compute stack map frames: " + r.getMessage());
            }
        }
    }

    /** Whether a value of class b is an a. */
    boolean isAssignable(String a, String b) throws Refusal {
        if (a.equals(b) || a.equals("java/lang/Object")) {
            return true;
        }
        ClassNode c = lookup(b);
        if (c.superName != null && isAssignable(a, c.superName)) {
            return true;
        }
        for (String i : c.interfaces) {
            if (isAssignable(a, i)) {
                return true;
            }
        }
        return false;
    }

    static byte[] readAll(InputStream in) throws IOException {
        try (InputStream s = in) {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            byte[] buf = new byte[1 << 16];
            for (int n; (n = s.read(buf)) > 0;) {
                out.write(buf, 0, n);
            }
            return out.toByteArray();
        }
    }

    /** Writes the jar beside the target and renames it, so a failure leaves no half-written jar. */
    static void write(Map<String, byte[]> entries, File target) throws IOException {
        File tmp = new File(target.getPath() + ".tmp");
        try (OutputStream f = new FileOutputStream(tmp); ZipOutputStream z = new ZipOutputStream(f)) {
            for (Map.Entry<String, byte[]> e : entries.entrySet()) {
                ZipEntry ze = new ZipEntry(e.getKey());
                ze.setTime(315532800000L); // 1980-01-01: the same bytes on every run
                z.putNextEntry(ze);
                z.write(e.getValue());
                z.closeEntry();
            }
        }
        if (!tmp.renameTo(target)) {
            tmp.delete();
            throw new IOException("cannot rename " + tmp + " to " + target);
        }
    }
}
